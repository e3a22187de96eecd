"""Thin entry points: Telegram updates and HTTP routes hand over to services at once."""
