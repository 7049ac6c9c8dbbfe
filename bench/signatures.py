"""Time the signatures gate on a range of 1,000 gpg-signed commits: cold, then cached.

.venv/bin/python bench/signatures.py [COUNT]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.gitops import Git  # noqa: E402
from bot.signatures import SignatureVerifier, TrustedKeys  # noqa: E402
from tests import gpgkit  # noqa: E402


def main(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp_name:
        tmp = Path(tmp_name)
        home = gpgkit.new_gnupghome(tmp / "gnupg")
        fpr = gpgkit.make_gpg_key(home, "Bench <bench@example.com>")
        (tmp / "keys").mkdir()
        (tmp / "keys" / "bench.asc").write_text(gpgkit.export_public(home, fpr))
        repo = gpgkit.init_repo(tmp / "repo")
        base = gpgkit.commit(repo, "base", files={"f": "x"})
        start = time.perf_counter()
        messages = [f"c{i}" for i in range(count)]
        parent = gpgkit.commit_chain(repo, base, messages, gpgkit.gpg_signing_config(home, fpr))[-1]
        gpgkit.git(repo, "update-ref", "refs/heads/head", parent)
        print(f"built {count} signed commits in {time.perf_counter() - start:.1f}s")
        gpgkit.kill_agent(home)

        keys = TrustedKeys.load(tmp / "keys")
        git = Git(repo)
        for label, cache_dir in (("cold", tmp / "cache"), ("disk-cached", tmp / "cache")):
            start = time.perf_counter()
            with SignatureVerifier(keys, cache_dir=cache_dir) as verifier:
                report = verifier.verify(git, base, "head", "all")
                elapsed = time.perf_counter() - start
                assert report.verdict == "pass" and len(report.commits) == count, report.verdict
                print(f"{label:12s} {elapsed:6.3f}s (incl. keyring setup)")
                if label == "cold":
                    start = time.perf_counter()
                    verifier.verify(git, base, "head", "all")
                    print(f"{'mem-cached':12s} {time.perf_counter() - start:6.3f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
