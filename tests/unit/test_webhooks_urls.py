"""Webhook URLs: syntax, and refusal of addresses tenants may not reach (SSRF), at creation and at connect."""

import asyncio
import ipaddress
import socket

import pytest
from wgs_kit.urls import RefusedUrl, Target, check_url, is_public, parse_url
from wgs_webhooks.sender import Sender


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.100.100.200",  # shared address space
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2001:db8::1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "fec0::1",  # deprecated site-local
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"]
)
def test_public_addresses_are_allowed(address):
    assert is_public(ipaddress.ip_address(address))


def test_parse_url():
    assert parse_url("https://example.com/hook") == Target("example.com", 443)
    assert parse_url("http://Example.COM:8080/x?y=1") == Target("example.com", 8080)
    assert parse_url("http://[2606:4700::1]/") == Target("2606:4700::1", 80)


# Hosts that yarl, and so aiohttp, reads as a private address literal (Unicode digits, full-width digits).
DISGUISED_LITERALS = {
    "http://①②⑦.0.0.1/hook": "127.0.0.1",
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook": "127.0.0.1",
    "http://⑯⑨.②⑤④.⑯⑨.②⑤④/latest": "169.254.169.254",
}


@pytest.mark.parametrize(("url", "host"), DISGUISED_LITERALS.items())
def test_parse_url_gives_the_host_aiohttp_connects_to(url, host):
    assert parse_url(url) == Target(host, 80)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "example.com/hook", "https://", "https://exa mple.com/", "http://x:99999/", ""]
)
def test_malformed_urls_are_refused(url):
    with pytest.raises(RefusedUrl):
        parse_url(url)


def fake_dns(monkeypatch, answers: dict[str, list[str]]) -> None:
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host, port, *args, **kwargs):
        literal = host.strip("[]")
        if literal.replace(".", "").isdigit() or ":" in literal:
            answers[host] = [literal]
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [(family[ipaddress.ip_address(a).version], socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


async def test_check_url_resolves_and_refuses_private_answers(monkeypatch):
    fake_dns(
        monkeypatch,
        {"public.example": ["93.184.216.34"], "mixed.example": ["93.184.216.34", "10.0.0.7"], "local": ["127.0.0.1"]},
    )
    await check_url("https://public.example/hook", allow_private=False)
    await check_url("http://8.8.8.8/hook", allow_private=False)
    for url in (
        "https://mixed.example/",
        "http://local/",
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        *DISGUISED_LITERALS,
    ):
        with pytest.raises(RefusedUrl, match="not a public address"):
            await check_url(url, allow_private=False)
    with pytest.raises(RefusedUrl, match="does not resolve"):
        await check_url("https://nowhere.example/", allow_private=False)
    await check_url("http://local/", allow_private=True)
    await check_url("http://nowhere.example/", allow_private=True)
    for url in DISGUISED_LITERALS:
        await check_url(url, allow_private=True)
    with pytest.raises(RefusedUrl):
        await check_url("gopher://public.example/", allow_private=True)


async def test_sender_refuses_a_host_whose_dns_answer_changed_to_a_private_address(monkeypatch):
    fake_dns(monkeypatch, {"rebind.example": ["127.0.0.1"]})
    sender = Sender(timeout_seconds=2, allow_private=False, max_connections=2)
    try:
        answer = await sender.post("http://rebind.example/hook", {"content-type": "application/json"}, b"{}")
    finally:
        await sender.close()
    assert answer.refused
    assert answer.status_code is None
    assert "not a public address" in (answer.error or "")


async def test_sender_refuses_private_address_literals_without_asking_dns(monkeypatch):
    fake_dns(monkeypatch, {})
    sender = Sender(timeout_seconds=2, allow_private=False, max_connections=2)
    try:
        answers = [
            await sender.post(url, {"content-type": "application/json"}, b"{}")
            for url in (
                "http://127.0.0.1:9/hook",
                "http://[::1]:9/hook",
                "http://169.254.169.254/latest",
                *DISGUISED_LITERALS,
            )
        ]
    finally:
        await sender.close()
    for answer in answers:
        assert answer.refused
        assert answer.status_code is None
        assert "not a public address" in (answer.error or "")
