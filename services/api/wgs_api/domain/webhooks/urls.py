"""The one check of a webhook URL a tenant gives (an endpoint's `url`, an instance's `webhook`)."""

from wgs_kit.urls import RefusedUrl, allow_private_from_env, check_url

from wgs_api.errors import Invalid


async def validate_url(url: str, field: str = "url") -> None:
    """422 naming `field` unless `url` is an http(s) URL this gateway may call: its host resolves
    to public addresses only, unless the operator allows private ones (`WGS_WEBHOOKS_ALLOW_PRIVATE`)."""
    try:
        await check_url(url, allow_private=allow_private_from_env())
    except RefusedUrl as exc:
        raise Invalid(f"{field}: {exc}", field=field) from None
