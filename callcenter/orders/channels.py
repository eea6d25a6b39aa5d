"""一号对外: the channels a request comes in by, one desk for all of them.

``work_orders.channel`` holds one of :data:`CHANNELS` (reports group by it).
"""

CHANNELS = ("phone", "web", "wechat", "app", "letter", "email", "mayor_mailbox")
"""Phone (the hotline), web portal, WeChat, the 12345 app, letters, e-mail, the mayor's
mailbox (市长信箱)."""

CHANNEL_NAMES = {"phone": "电话", "web": "网站", "wechat": "微信", "app": "APP", "letter": "来信",
                 "email": "电子邮件", "mayor_mailbox": "市长信箱"}
