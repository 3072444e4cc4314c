"""Task adapters: each turns a task into prompts for `SamPredictor` and returns a dataclass."""
