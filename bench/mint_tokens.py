#!/usr/bin/env python3
"""Mints the JWTs bench/routes.sh sends: HS256 from a secret, RS256 and ES256 with the auth
crate's throw-away test keys (signed by the openssl command line). Standard library only.

Usage: mint_tokens.py SECRET RSA_KEY_PEM P256_KEY_PEM  ->  prints three lines: hs256 rs256 es256
"""
import base64, hashlib, hmac, json, subprocess, sys, time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_input(alg: str) -> bytes:
    now = int(time.time())
    header = {"alg": alg, "typ": "JWT"}
    claims = {"sub": "bench", "iss": "https://id.bench", "aud": "holdfast", "iat": now - 10,
              "exp": now + 3600, "scope": "ai:read", "org": {"id": "acme"}}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}".encode()


def openssl_sign(key: str, data: bytes) -> bytes:
    return subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=data,
                          capture_output=True, check=True).stdout


def der_to_raw(der: bytes) -> bytes:
    """An ECDSA DER signature (SEQUENCE of two INTEGERs) as JOSE's fixed-width r || s."""
    def integer(at: int):
        assert der[at] == 0x02
        length = der[at + 1]
        value = der[at + 2: at + 2 + length]
        return value.lstrip(b"\0").rjust(32, b"\0"), at + 2 + length
    at = 2 if der[1] < 0x80 else 3
    r, at = integer(at)
    s, _ = integer(at)
    return r + s


secret, rsa_key, p256_key = sys.argv[1:4]
hs = signing_input("HS256")
print(f"{hs.decode()}.{b64(hmac.new(secret.encode(), hs, hashlib.sha256).digest())}")
rs = signing_input("RS256")
print(f"{rs.decode()}.{b64(openssl_sign(rsa_key, rs))}")
es = signing_input("ES256")
print(f"{es.decode()}.{b64(der_to_raw(openssl_sign(p256_key, es)))}")
