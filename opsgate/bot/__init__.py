"""Telegram-facing parts: rendering, keyboards, callback codec and the one outbound sender."""
