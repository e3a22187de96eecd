"""The anchor the bot benches compare opsgate with: a bare python-telegram-bot Application.

    .venv/bin/python -m bench.bare_bot --api-url http://127.0.0.1:PORT --token TOKEN
                                       [--concurrency 16]

Its only handler answers callback queries; it polls as opsgate does, with as many updates in
flight as opsgate's ``update_concurrency``, so what a bench measures beside it is the work
opsgate adds to a tap, not another way of receiving it. It imports nothing of opsgate or the
tests, so that its RSS is a bare bot's.
"""

from __future__ import annotations

import argparse
from typing import Any

from telegram import Update
from telegram.ext import Application, CallbackQueryHandler, ContextTypes


async def _answer(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.callback_query is not None:
        await update.callback_query.answer()


def build_bare_bot(
    api_url: str, token: str, concurrency: int
) -> Application[Any, Any, Any, Any, Any, Any]:
    application = (
        Application.builder()
        .token(token)
        .base_url(f"{api_url}/bot")
        .concurrent_updates(concurrency)
        .build()
    )
    application.add_handler(CallbackQueryHandler(_answer))
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    bot = build_bare_bot(args.api_url, args.token, args.concurrency)
    bot.run_polling(allowed_updates=Update.ALL_TYPES)


if __name__ == "__main__":
    main()
