"""The webhook outbox read model: run events become messages and one delivery per target."""
