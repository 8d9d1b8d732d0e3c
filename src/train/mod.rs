//! The training loop: batches, schedules, metrics, checkpoints.
