"""The per-pod sidecar: Knative's queue-proxy."""
