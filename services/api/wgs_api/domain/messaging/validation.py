"""Send bodies to message content; each failure is a 422 naming the field."""

import base64
import binascii
import re

from wgs_contracts.instance_events import Location, Media, MessageContent, MessageType, Reaction

from wgs_api.domain.messaging.schemas import SendBody
from wgs_api.errors import Invalid

RECIPIENT = re.compile(r"^\+?[1-9][0-9]{5,14}$")
TEXT_MAX = 4096
MEDIA_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_MIME = {MessageType.IMAGE: "image/jpeg", MessageType.DOCUMENT: "application/octet-stream"}


def validate_send(body: SendBody) -> tuple[str, MessageContent]:
    """(recipient digits, content) of a send body."""
    if not RECIPIENT.match(body.to.strip()):
        raise Invalid("to: expected 6-15 digits, optionally starting with +", field="to")
    try:
        kind = MessageType(body.type)
    except ValueError:
        raise Invalid(f"type: expected one of {', '.join(t.value for t in MessageType)}", field="type") from None
    return body.to.strip().lstrip("+"), content_of(kind, body)


def content_of(kind: MessageType, body: SendBody) -> MessageContent:
    """The content of a message of `kind`, checked."""
    if kind is MessageType.TEXT:
        if not body.text or len(body.text) > TEXT_MAX:
            raise Invalid(f"text: 1-{TEXT_MAX} characters", field="text")
        return MessageContent(type=kind, text=body.text)
    if kind in (MessageType.IMAGE, MessageType.DOCUMENT):
        return MessageContent(type=kind, media=media_of(kind, body))
    if kind is MessageType.LOCATION:
        location = body.location
        if location is None:
            raise Invalid("location: required for a location message", field="location")
        if not -90 <= location.latitude <= 90:
            raise Invalid("location.latitude: between -90 and 90", field="location.latitude")
        if not -180 <= location.longitude <= 180:
            raise Invalid("location.longitude: between -180 and 180", field="location.longitude")
        return MessageContent(
            type=kind, location=Location(latitude=location.latitude, longitude=location.longitude, name=location.name)
        )
    reaction = body.reaction
    if reaction is None or not reaction.message_id or not reaction.emoji:
        raise Invalid("reaction: messageId and emoji are required", field="reaction")
    return MessageContent(type=kind, reaction=Reaction(message_id=reaction.message_id, emoji=reaction.emoji))


def media_of(kind: MessageType, body: SendBody) -> Media:
    """The attachment of an image or document message, checked."""
    media = body.media
    if media is None or (media.base64 is None) == (media.url is None):
        raise Invalid("media: give exactly one of base64 or url", field="media")
    if media.base64 is not None:
        try:
            size = len(base64.b64decode(media.base64, validate=True))
        except (binascii.Error, ValueError):
            raise Invalid("media.base64: not valid base64", field="media.base64") from None
        if not 0 < size <= MEDIA_MAX_BYTES:
            raise Invalid(f"media.base64: 1 byte to {MEDIA_MAX_BYTES // 2**20} MB", field="media.base64")
    if media.url is not None and not media.url.startswith(("http://", "https://")):
        raise Invalid("media.url: must be an http(s) URL", field="media.url")
    return Media(
        mime_type=media.mime_type or DEFAULT_MIME[kind],
        base64=media.base64,
        url=media.url,
        filename=media.filename,
        caption=media.caption or body.caption,
    )
