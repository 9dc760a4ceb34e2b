"""Developer tools, never imported by the product: the Kubernetes simulator and the demo."""
