"""The domain: every decision opsgate makes lives here, independent of Telegram and HTTP."""
