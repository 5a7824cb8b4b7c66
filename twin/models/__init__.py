"""The learner: policy, features, learning rules (a registry by name), the model and its state."""
