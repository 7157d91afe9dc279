"""One training engine for training, retraining and every unlearning method."""
