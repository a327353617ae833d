"""Deployment checks: container images, the Compose stack and the Kubernetes manifests."""
