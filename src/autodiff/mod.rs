//! Reverse-mode autodiff as an IR -> IR pass: builds the train-step graph (forward, loss, backward, optimizer, observers).
