"""Salted password hashes for the demo login (PBKDF2-SHA256 from the standard library)."""

import argparse
import getpass
import hashlib
import hmac
import secrets

SCHEME = "pbkdf2_sha256"
ITERATIONS = 200_000


def hash_password(password: str, *, salt: str | None = None, iterations: int = ITERATIONS) -> str:
    """Return ``pbkdf2_sha256$<iterations>$<salt>$<hex digest>`` for ``password``."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"{SCHEME}${iterations}${salt}${digest.hex()}"


def is_password_hash(value: str) -> bool:
    parts = value.split("$")
    return len(parts) == 4 and parts[0] == SCHEME and parts[1].isdigit()


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (a hash from :func:`hash_password`)."""
    if not is_password_hash(stored):
        return False
    _, iterations, salt, _ = stored.split("$")
    candidate = hash_password(password, salt=salt, iterations=int(iterations))
    return hmac.compare_digest(candidate, stored)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="science-gateway-hash-password",
        description="Print a salted hash for DemoAuthenticator.users[...]['password'].",
    )
    parser.add_argument("--stdin", action="store_true", help="read the password from standard input")
    args = parser.parse_args(argv)
    password = input() if args.stdin else getpass.getpass("Password: ")
    print(hash_password(password))


if __name__ == "__main__":
    main()
