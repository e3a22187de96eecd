"""The anchor of bench/memory.py: python-telegram-bot's smallest polling bot, nothing else.

    python -m bench.bare_bot TOKEN BASE_URL

It imports only PTB, so its RSS is what any bot on this interpreter costs.
"""

from __future__ import annotations

import sys

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes


async def _start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.effective_message is not None:
        await update.effective_message.reply_text("hello")


def main() -> None:
    token, base_url = sys.argv[1:3]
    app = Application.builder().token(token).base_url(base_url).build()
    app.add_handler(CommandHandler("start", _start))
    app.run_polling(poll_interval=0.0)


if __name__ == "__main__":
    main()
