"""`routeplane token …` (Web3 key files and JWTs) and `routeplane keys …` (API keys in the store)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from ..config import ConfigError, load_config
from .caip10 import BASE_MAINNET, SOLANA_MAINNET, parse_chain
from .crypto import Wallet
from .window import MAX_BUDGET, parse_window_cli, valid_budget


def _models(text: Optional[str]) -> Optional[List[str]]:
    """`--models`: None when not given (every model); `--models ''` is an explicit empty list (no model)."""
    if text is None:
        return None
    return [m.strip() for m in text.split(",") if m.strip()]


def _fail(message: str, code: int = 2) -> int:
    print(f"routeplane: {message}", file=sys.stderr)
    return code


# --- token --------------------------------------------------------------------


def _wallet(path: str, create: bool) -> Wallet:
    if os.path.exists(path):
        return Wallet.load(path)
    if not create:
        raise FileNotFoundError(f"{path}: no such key file (create one with `routeplane token keygen`)")
    wallet = Wallet.generate()
    wallet.save(path)
    print(f"routeplane: created key file {path} (keep it secret: it is the private key)", file=sys.stderr)
    return wallet


def _issuer(wallet: Wallet, chain: str) -> str:
    chain = {"solana": SOLANA_MAINNET, "evm": BASE_MAINNET, "eip155": BASE_MAINNET}.get(chain, chain)
    parse_chain(chain)
    namespace, _, reference = chain.partition(":")
    address = wallet.solana_address if namespace == "solana" else wallet.evm_address
    return f"{namespace}:{reference}:{address}"


def cmd_token_keygen(args: argparse.Namespace) -> int:
    if os.path.exists(args.key):
        return _fail(f"{args.key} exists; refusing to overwrite a key file")
    wallet = _wallet(args.key, create=True)
    _print_identities(wallet)
    return 0


def cmd_token_show(args: argparse.Namespace) -> int:
    try:
        _print_identities(_wallet(args.key, create=False))
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def _print_identities(wallet: Wallet) -> None:
    from .caip10 import parse_caip10

    for chain in (SOLANA_MAINNET, BASE_MAINNET):
        iss = _issuer(wallet, chain)
        print(f"{iss}  account {parse_caip10(iss).account_id}")


def cmd_token_mint(args: argparse.Namespace) -> int:
    from .jwt import mint_token

    if args.exp < 0:  # it minted a token without `exp`, one that never expires
        return _fail(f"--exp {args.exp}: give the seconds until the token expires (> 0), or 0 for never")
    if args.budget is not None and not valid_budget(args.budget):  # every request would refuse the token
        return _fail(f"--budget {args.budget}: give a whole number of micro-USD from 0 to {MAX_BUDGET}")
    try:
        wallet = _wallet(args.key, create=True)
        iss = _issuer(wallet, args.chain)
        now = time.time()
        claims: Dict[str, Any] = {"scope": args.scope}
        if args.models is not None:
            claims["models"] = _models(args.models)
        if args.aud:
            if not all(args.aud):
                return _fail("--aud needs a non-empty audience")
            claims["aud"] = args.aud[0] if len(args.aud) == 1 else list(args.aud)
        if args.budget is not None:
            claims["budget"] = args.budget
            claims["budget_scope"] = args.budget_scope
        if args.window:
            claims["budget_window"] = parse_window_cli(args.window).to_json()
        if args.exp > 0:
            claims["exp"] = int(now + args.exp)
        elif args.scope == "admin":
            return _fail("admin tokens must expire (--exp SECONDS > 0)")
        if args.nbf:
            claims["nbf"] = int(now + args.nbf)
        claims["jti"] = args.jti or uuid.uuid4().hex
        print(mint_token(wallet, iss, claims, now=lambda: now))
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    return 0


# --- token revocations --------------------------------------------------------


def _read_token(path: str) -> str:
    """The token from a file or stdin (`-`): never from argv, which ps and shell history keep."""
    if path == "-":
        return sys.stdin.read(1 << 17).strip()
    with open(path, "r", encoding="utf-8") as fh:
        return fh.read(1 << 17).strip()


def _revocation_store(args: argparse.Namespace) -> Tuple[Any, Any]:
    from .settings import AuthSettings

    config, store = _open_auth(args, "revocations", refuse_none="takes no tokens to revoke")
    return AuthSettings.from_config(config.auth), store


def _when(t: Optional[float]) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from .revocation import account_for, cutoff_time, ref_from_jti, ref_from_token, revoke

    try:
        settings, store = _revocation_store(args)
        bound = f"within {settings.revocation.cache_seconds:g} s on every worker sharing the database"
        now = time.time()
        if args.token_file is not None:
            if args.account or args.iss:
                return _fail("--token-file names its own account: leave out --account and --iss")
            ref = ref_from_token(_read_token(args.token_file), settings.verifier.max_token_bytes,
                                 settings.verifier.audience)
        elif args.all_before is not None:
            account = account_for(args.account, args.iss)
            in_force = store.revoke_before(account, cutoff_time(args.all_before, now), now)
            print(f"account {account}: tokens issued before {in_force:.3f} ({_when(in_force)}) are refused {bound}")
            return 0
        else:
            ref = ref_from_jti(account_for(args.account, args.iss), args.jti)
        added = revoke(store, ref, now)
    except Exception as exc:  # config, store and validation errors alike: one line, never the token
        return _fail(str(exc), 1)
    state = "revoked" if added else "already revoked:"
    print(f"{state} session {ref.session_id} of account {ref.account_id} (jti {ref.jti or '-'}), refused {bound}")
    return 0


def cmd_token_revocations(args: argparse.Namespace) -> int:
    from .revocation import account_for

    try:
        _settings, store = _revocation_store(args)
        account = account_for(args.account, args.iss) if (args.account or args.iss) else None
        tokens, cutoffs = store.list_revocations(account)
    except Exception as exc:
        return _fail(str(exc), 1)
    for t in tokens:
        print(json.dumps(dict(t.to_json(), kind="token")) if args.json else
              f"token    {t.session_id}  {t.account_id}  jti={t.jti or '-'}  revoked={_when(t.revoked_at)}  "
              f"expires={_when(t.expires_at)}")
    for c in cutoffs:
        print(json.dumps(dict(c.to_json(), kind="account")) if args.json else
              f"account  {c.account_id}  issued-before={_when(c.not_before)}  set={_when(c.updated_at)}")
    return 0


# --- keys ---------------------------------------------------------------------


_NO_KEYS = ("takes no API keys: set auth.mode to api_keys (or api_keys+jwt), then run `routeplane migrate` to "
            "create the key tables")


def _auth_store(args: argparse.Namespace) -> Any:
    return _open_auth(args, "API keys", refuse_none=_NO_KEYS)[1]


def _open_auth(args: argparse.Namespace, what: str, refuse_none: str = "") -> Tuple[Any, Any]:
    """(config, AuthStore) of the gateway's config, once its database is migrated.

    `refuse_none`: what to say when auth.mode is none, checked before the store: that mode installs no
    auth plugin, so its tables were never migrated ("no such table: auth_api_keys" said nothing useful)."""
    from ..app import build_app
    from ..store import Store, verify
    from .store import AuthStore

    config = load_config(getattr(args, "config", None) or os.environ.get("ROUTEPLANE_CONFIG") or None)
    if refuse_none and config.auth.get("mode", "none") == "none":
        raise ConfigError(f"{config.source}: auth.mode is none, so this gateway {refuse_none}")
    if not config.database_url:
        raise ConfigError(f"{config.source}: database.url is empty; {what} live in the database")
    store = Store.from_url(config.database_url)
    app = build_app(config, store=store)
    verify(store, app.plugins)  # a clear "run routeplane migrate" instead of a missing-table error
    return config, AuthStore(store)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from .keys import create_key

    if args.expires_in is not None and args.expires_in <= 0:  # 0 made a key that never expires
        return _fail(f"--expires-in {args.expires_in}: give the seconds until the key expires (> 0), or leave "
                     "--expires-in out for a key that never expires")
    try:
        config, store = _open_auth(args, "API keys", refuse_none=_NO_KEYS)
        window = parse_window_cli(args.window) if args.window else None
        expires = time.time() + args.expires_in if args.expires_in is not None else None
        row, key = create_key(store, name=args.name, account_id=args.account, scope=args.scope,
                              models=_models(args.models), budget_micro_usd=args.budget, budget_scope=args.budget_scope,
                              budget_window=window, expires_at=expires)
    except Exception as exc:  # config, store and validation errors alike: one line, no traceback
        return _fail(str(exc), 1)
    print(key)
    print(f"routeplane: created key {row.id} for account {row.account_id} (scope {row.scope}); the key is shown "
          "only this once", file=sys.stderr)
    if "api_keys" not in str(config.auth.get("mode")):  # made ahead of a switch, perhaps: say it does not work yet
        print(f"routeplane: warning: auth.mode is {config.auth.get('mode')}, so the gateway accepts no API key "
              "until auth.mode is api_keys or api_keys+jwt", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    try:
        rows = _auth_store(args).list_keys()
    except Exception as exc:
        return _fail(str(exc), 1)
    now = time.time()
    for r in rows:
        state = ("revoked" if r.revoked_at else "expired" if r.expires_at and r.expires_at <= now else "active")
        out = {"id": r.id, "name": r.name, "account_id": r.account_id, "scope": r.scope, "models": list(r.models),
               "budget_micro_usd": r.budget_micro_usd, "budget_scope": r.budget_scope, "budget_window": r.budget_window,
               "expires_at": r.expires_at, "state": state}
        print(json.dumps(out) if args.json else
              f"{r.id}  {state:<7}  {r.scope:<5}  {r.account_id}  {r.name or '-'}  "
              f"models={','.join(r.models) or '(none)'}  "
              f"budget={r.budget_micro_usd if r.budget_micro_usd is not None else '-'}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    try:
        done = _auth_store(args).revoke_key(args.key_id)
    except Exception as exc:
        return _fail(str(exc), 1)
    if not done:
        return _fail(f"no active key with id {args.key_id}", 1)
    print(f"revoked {args.key_id}")
    return 0


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scope", choices=("api", "admin"), default="api")
    p.add_argument("--models", help="comma-separated model patterns; only * is special (default: all; "
                   "'' = none)")
    p.add_argument("--budget", type=int, help="budget in micro-USD (1 USD = 1000000)")
    p.add_argument("--budget-scope", choices=("account", "session"), default="account")
    p.add_argument("--window", help="budget window: rounds:N (last N requests) or seconds:S")


def _account_args(p: argparse.ArgumentParser) -> None:
    who = p.add_mutually_exclusive_group()
    who.add_argument("--account", help="the JWT account id (acct_…, see `routeplane token show`)")
    who.add_argument("--iss", help="the issuer (CAIP-10): its account on every chain of its namespace")


def add_commands(sub: Any) -> None:
    token = sub.add_parser("token", help="Web3 key files and self-signed JWTs (SOL_EDDSA / EIP191K)")
    tsub = token.add_subparsers(dest="token_command", required=True)
    keygen = tsub.add_parser("keygen", help="create a key file (one seed: a Solana and an EVM identity)")
    keygen.add_argument("--key", default="routeplane-key.json")
    keygen.set_defaults(func=cmd_token_keygen)
    show = tsub.add_parser("show", help="print the key file's CAIP-10 identities and account ids")
    show.add_argument("--key", default="routeplane-key.json")
    show.set_defaults(func=cmd_token_show)
    mint = tsub.add_parser("mint", help="mint a token (creates the key file if missing)")
    mint.add_argument("--key", default="routeplane-key.json")
    mint.add_argument("--chain", default="solana", help="solana, evm, or a CAIP-2 chain id (e.g. eip155:1)")
    _budget_args(mint)
    mint.add_argument("--exp", type=int, default=3600, help="seconds until expiry (0 = never; not for admin)")
    mint.add_argument("--nbf", type=int, default=0, help="seconds until the token becomes valid")
    mint.add_argument("--jti", help="token id (default: random); a session budget is keyed on it")
    mint.add_argument("--aud", action="append", help="audience (aud) the token is for: the gateway's "
                      "auth.audience (repeat for several)")
    mint.set_defaults(func=cmd_token_mint)
    revoke = tsub.add_parser("revoke", help="revoke one token (by jti, or the token itself) or an account's "
                             "tokens issued before a time")
    revoke.add_argument("--config")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--jti", help="the token's jti (with --account or --iss)")
    which.add_argument("--token-file", metavar="PATH", help="read the token from PATH ('-' = stdin); its id is "
                       "derived as the gateway derives it (jti, or the hash of header.payload)")
    which.add_argument("--all-before", metavar="now|UNIX", help="refuse every token of the account issued (iat) "
                       "before this time")
    _account_args(revoke)
    revoke.set_defaults(func=cmd_token_revoke)
    revocations = tsub.add_parser("revocations", help="list revoked tokens and account cut-offs")
    revocations.add_argument("--config")
    _account_args(revocations)
    revocations.add_argument("--json", action="store_true")
    revocations.set_defaults(func=cmd_token_revocations)

    keys = sub.add_parser("keys", help="API keys in the database: create, list, revoke")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="create a key; it is printed once and stored only as a hash")
    create.add_argument("--config")
    create.add_argument("--name", default="")
    create.add_argument("--account", help="account id (default: derived from the key id)")
    _budget_args(create)
    create.add_argument("--expires-in", type=int, help="seconds until the key expires, > 0 (default: never)")
    create.set_defaults(func=cmd_keys_create)
    lst = ksub.add_parser("list", help="list keys (never the keys themselves)")
    lst.add_argument("--config")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_keys_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("--config")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)
