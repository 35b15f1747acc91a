"""dispatcher: validate, queue and deliver chat messages."""
