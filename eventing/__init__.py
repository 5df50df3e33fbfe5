"""Knative Eventing's data plane: brokers, triggers, delivery and CloudEvents filters."""
