"""The learner: training batches, token log-probs, policy updates, and the Ray Train learner group."""
