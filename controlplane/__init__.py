"""The local platform (`knpy serve`) and the Knative resource model."""
