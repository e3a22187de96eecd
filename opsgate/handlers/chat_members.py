"""The bot's own membership: removed from a chat -> inactive; added back -> active."""

from __future__ import annotations

from dataclasses import dataclass

from telegram import ChatMember, Update
from telegram.ext import ContextTypes

from opsgate.services.chats import ChatDirectory

GONE = {ChatMember.LEFT, ChatMember.BANNED}


@dataclass
class ChatMembers:
    chats: ChatDirectory

    async def on_my_membership(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        change = update.my_chat_member
        if change is None:
            return
        chat_id = change.chat.id
        if change.new_chat_member.status in GONE:
            await self.chats.deactivate(chat_id, f"bot {change.new_chat_member.status}")
        else:
            await self.chats.activate(chat_id)
