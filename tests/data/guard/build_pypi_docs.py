#!/usr/bin/env python3
"""Benign records from the PyPI descriptions (READMEs) of the Python packages
Fabric's tests install.

    python3 tests/data/guard/build_pypi_docs.py --requirements > /tmp/pypi-docs.txt
    pip download --no-deps --only-binary=:all: -d /tmp/pypi-docs -r /tmp/pypi-docs.txt
    for w in /tmp/pypi-docs/*.whl; do unzip -q -o "$w" '*.dist-info/METADATA' -d /tmp/pypi-docs/w; done
    python3 tests/data/guard/build_pypi_docs.py /tmp/pypi-docs/w

appends to `dev.jsonl` and `validation.jsonl` (next to this script) benign
records marked `"added": "pypi-docs"` (records already marked so are
replaced, so running it twice gives the same files). A site-packages
directory holding these versions serves as well as the unzipped wheels: the
script reads each package's `*.dist-info/METADATA` and checks it against the
SHA-256 pinned below (pip does not rewrite the file when it installs).

The packages (PINNED, chosen once when the list was made; the script does
not read licences) are what `.ci/run` installs for the tests (the MCP SDK,
schemathesis, opentelemetry-proto, cryptography and their dependencies), at
the versions it installed on 2026-11-27, less the MCP and OpenTelemetry ones
(other sources of the parts quote their projects' documentation), pip and
setuptools, those whose description is shorter than 300 characters, and
those whose metadata names no MIT, BSD, Apache, ISC, PSF, MPL, CC0 or
public-domain licence (none of the rest). A record is whole paragraphs of a
package's long description, as written (Markdown or reStructuredText; line
endings read as `\n`), 300 to 2,400 characters: what a tool that reads a
package page hands an agent, with badges, links with query strings, install
commands, code, maintenance notices and contribution guides. At most four
records per package, from the description's start.

The split is fixed before any record is built: the packages, in name order,
are shuffled with a fixed seed and alternate between the parts, development
first, so a package's records are all in one part.
"""

import email
import hashlib
import pathlib
import random
import re
import sys

from guard_parts import Parts, replace_and_report

SEED = 20261127
TAG = "pypi-docs"
PER_PACKAGE = 4
MIN_CHARS, MAX_CHARS = 300, 2400

# dist-info name (package-version) and the SHA-256 of its METADATA.
PINNED = """
annotated_types-0.7.0 ee5b6ac64b09274c026051813484025939564067801f485115d9cadc207cf791
anyio-4.16.0 b184ac9cd097e2bb7f90d42799346cc91c276095d000d95d7f7ddd407d0c887e
asttokens-3.0.1 6ad77bc2b1289f0d9232027e1877cc37fa6ddc4af5cac8bd2d29641a733e6888
attrs-26.1.0 4cd40e690f23bf37cbcad34efd6758e062df1df07c86833f7e3ce95bf1fa38cc
aws_sam_translator-1.110.0 6e0fa5ee7254bf921c96290ac743e3079c5f61d3f406fce08fbb709feaeb8cd2
aws_xray_sdk-2.15.0 4459a6fb706e4fc2eeb3331421cb37ed1a7bcb16476dcdb46e42c187fd24219f
awscli-1.45.11 c440708463d13c857eecd20d5ea02e2ecb318ed65cfc54f8c7fc877227c4a3e2
backcall-0.2.0 2d3f3fa46849df8645f2358464bdcbfa107b1cb064b1c23aabd71d8a90d6c1aa
blake3-1.0.11 2f15e7a74eee31a34ce638658d096dadbda21844f00dac70b2e7acaf28a4179c
blinker-1.9.0 b8846233cc238db1e40ad6c2c93bdcb54dfb200664d2411ee64c4095dd5dbf30
boto3-1.43.11 be06e2a5b30915f5fda93ac00c59dfa4f91cf87fbf2a65d0de12206973b55871
botocore-1.43.11 72d744d221f2868bed2f1df1c17c3a47402c04328124eeb307de95351b6e348a
certifi-2026.5.20 1c38826bc95f7744c69501689e00e3a1a2c93a158988937ce32ef4ed5c1df0f6
cffi-2.0.0 b98ce7e3417af089bc12d5c73412d9b3b1683ccf8ec73c986c35ac8c9be1ba39
cfn_lint-1.51.0 db91db141f97b8bfd235d4efac14240fab16e50af6b5349021fbb014062e66ea
charset_normalizer-3.4.7 2bc94af0bf0b699d5898abd62eddf3124a48c6208e0b9f31361cc542b7d02714
click-8.4.0 c6393d65643f8492f5054fd0c73cff08c7e3a57b4d3d1b532fa687b16087162e
cloudpickle-3.1.3 29419274b4938274ce7d4f3f8fc392aa7033a0be25bfbf185e846e797c5c8c9e
colorama-0.4.6 7baed29eb50c3b29bdb33ff84e3177bf1bc05784f7685ecdcaa4471c7dd810cc
cryptography-48.0.0 43f08e5fe52da6c825e5ee189bd985ee1537860020332dcbcbc5da5679dec906
decorator-5.2.1 8bbe9fa7b94da3441b8a75f73412634aefc6855a7d03c8ae69bfbe9bef26281e
docker-7.1.0 aa509131354c84bd49b5293e3246f89615e5233994714dc949b464cfae246d0b
executing-2.2.1 d7586d1ae225bee126c4237eb0c4d7699a8580b81eb558cc500c263d29a633ff
flask-3.1.3 aa6760ed6f545704474d70733e4a63a7f1481e376973edc896a13d02a7224c7c
flask_cors-6.0.2 c58622c58a573c1a91db55ab46657a3cc4a5461ece4392770381bd583ea4ffe3
graphql_core-3.2.8 ab0347553b55438d7470d9a88f69120aebc907f383cce03b5531cf6d59309340
h11-0.16.0 28f326098ac09fcba79b8f180f96087c841fe2456215cb7b872a9c7d5cd19d64
harfile-0.6.0 1752bb3c203ef36b4b2b083482b127b83779f40308c4c2cd59d3aacc69650525
httpcore2-2.16.2 e4d540d65e346c24d66fb268a60ac769260667aca77f0261a5e8dd864ac3a51d
httpx2-2.16.2 5d8b261ace858b47c77fa37baaa8a9c3e75ea58e1eb7a5cc08947c95218fa221
hypothesis-6.170.17 645b099ac6a691396a7edea134ee9086577c3dcbb58431f3a8a5fdb350267da4
hypothesis_graphql-0.13.5 ccfcf921214ae7b7b9043156bec1fe867d24eaecad1a267efe9bbb08f0cba81a
idna-3.20 dbd8c14c1e4ca1e0c9824a6dbc7cbbf78884f38eb52d91148cd3025f671e4b85
iniconfig-2.3.1 47c2c35d936f5c649d8074c6464719a42966a67b5cebad01e3e5784cf090cfb6
ipython-8.12.3 ec8f478cc3e0d0d6c9a36babd154c4bee6c3f3a99e10885671edcb423a6f9cc1
itsdangerous-2.2.0 d2b934fb56708a1b94e439f0255c0f5a8108e3258ec827b18a1dc9c991db9611
jedi-0.20.0 436bd0fb249b82dee15e85e2fb91d08d8e797481a16af48a725b8e4fb5340478
jinja2-3.1.6 68c5548fb67c4132a13898d9b31ec50c6bea2abdd915d921f214355c3a6499c8
jmespath-1.1.0 81181e9a312f1b87e5be7c8376c57b0e8c962ba524a25a313d43dc2e2d3984f3
joblib-1.6.0 c5fd6509906c5795fd6724d97bc1709d1f266b78aff92c0156d6cf5ad7c045e3
joserfc-1.6.5 32716e59786b51abf25d170e9e389047547ca71d5a59187b860dd67633bf9141
jsonpatch-1.33 06f32bbb4669267d84a82bdaf5fc0dd4d861d0da006b2af5ef598259a66f7a29
jsonpath_ng-1.8.0 a6bce6e55cb926d873c9dfccc023e46c999cf7413983629e5c58eeb6b992b8bb
jsonpointer-3.1.1 b461427459b7a1d595585ba05a9d0466b134b849204f4ddfbc1b1ed20775ba5d
jsonschema-4.26.0 05b189866ca98a96da3934bf6b83687ced3ff85325273b77e16b705f6d8b26d2
jsonschema_path-0.5.0 cd7e9a4426436980f099d826dbce8f61afa6603b496385fba9a9eb0ad59cdd48
jsonschema_rs-0.60.3 d8dee2ea321358de1125a403d682d8dbb15194bbe36cb5197891dbd0e1705dc7
jsonschema_specifications-2025.9.1 35abd41757f32b4ea24756920ded47b70173d77cbc052a5a6d3ab583b2e8d89d
lazy_object_proxy-1.12.0 599b9b7fc97ecd378f9baafd925b6df03f1232e1724d4fd94b31e26d9434a224
libcst-1.0.1 2a624a1976f03d7c84b83d858d8f50077248828178f6254f3141bcc65e3a0ced
markdown_it_py-4.3.0 d681c81bdf30501ff38f4ada3902d04c447c0949058eea47011308e301e9ef3e
markupsafe-3.0.3 12b4cc61a7fa288cf7667ee3f213786d9619db57fb33ff6f934afbcb5c12ec81
matplotlib_inline-0.2.2 fedb3d587ec2d3fa4b0a81fd5353df697d2534c8ee714dbf050009afc60bcab7
mdurl-0.1.2 b53b29d48f499367053fda3c81e7ce27d2558380ebbf83e66023b02eb7ddd25d
moto-5.2.1 58820378b2396012ffc90ae8fa6c8db55d05da0ecc85201a01e4a2f339da8e54
mpmath-1.3.0 44b66ea444b9c0d19ae94815d356bf047ae6b680c19268b5c265687cd6a81406
narwhals-2.29.0 10f6c4c5a017640f6c8406f5833adea64a4929f93fd737e877ca6c08f5f851c2
networkx-3.6.1 aca5d94a97d1f70f301d033addb635f6e66be8973a00aba4127637eed2ef316a
numpy-2.4.6 b082c52ccbe3b880bae177c35171b52ed6c947f3ad71e3762f2723f60a411de0
openapi_schema_validator-0.9.0 a2686e8af37c337b47a05223f6708f33ab44b43e24915f5c2d63ac0ec02979f0
openapi_spec_validator-0.9.0 52e6672f9f16d61ade2291b93faeffa3372719cb342ab57f26bc49a2ee656f9e
orjson-3.8.3 db28cf4e2825082f9b815385237a117bf3dd90cf370b0667c22ef11d8ec7e9e7
outcome-1.3.0.post0 6eb5b1599fddf18849cc5db81afc9f61199e018df5aaf6c03873d182b433d05e
packaging-26.4 f2fe7a3440ed0e67f703ec9cf0275c9f9b27be0eae3844258606caa7b0c56d62
parso-0.8.7 2fd8c9f8209218163a6c086ba8075d177122430645fea770cc02c53cd426119d
pathable-0.6.0 c418727931012c2306cb8fa2726d044616c3178c1fc078ce182385dcf2b59922
pexpect-4.8.0 803e10351d17b9bb749cbcc71ff62175c5eb412e4c2071aec44fa426cd11349a
pickleshare-0.7.5 82d3478fea962651cab4b13daa41b13f33771b03cec3d76d1ece7555047e09ee
pluggy-1.7.0 20ac8237e37f1d6e7e75500cd663015177ba80c1a1a595ff6bae18a539ff8a2c
prompt_toolkit-3.0.52 80d4bd40a6a171dfd25c332baebee1fd8722342f133db5385e2d5719a5da2e29
ptyprocess-0.7.0 c3c2b96b5d9a55da5958c34d08c18a0849f56609026cc46d5c95b8b77fcf3e0c
pure_eval-0.2.3 97cdad3355bf3083668e8a5e98ad2a958cd68839b369a35b171e372ab48ee986
py_partiql_parser-0.6.3 4700f68b13d62f16a85cb53b1726398e0d7952f3a01ff560612fe4b077e27990
pyasn1-0.6.3 cd7f3c9f149e3e07816bd1be770d476be339f8ad9a17fcab551c7e322d8f7cea
pycparser-3.0 f547a60b0ab54cc2f242213d1f87960ad80df7dd5dfeb98d17a444d48bfb6b93
pydantic-2.13.4 d1e56c3412492512fb6b59a9dfc25ab7af2a8204585cd7bca000513023133394
pydantic_core-2.46.4 135fa8b2f89473e9191c7078c2164e3ec6c8927a61c2379c2fddcc07f11f3bae
pydantic_settings-2.14.1 8b1e9e8e5f8cd18758d85c5b75bfb5be718b6ad7bdee29dd7bae02a092372fbf
pygments-2.20.0 e0528f51b30427fae94723662ba622f8d8db2a4d8d3f1365698d67a52450a845
pyjwt-2.15.1 1ea0c9f139b8c928276b3628af165955f6f764491448a6ad8f103cdcbb382da3
pyparsing-3.3.2 3311a8b949d70f71a2b9788a9327f11d9d5a6a8012d6c046ca254ad2de877f45
pyrate_limiter-4.5.1 d0084825d3dc5e1f24b7952c214fc1b80a2108b9bd64aa3963c93efe06dcddce
pytest-9.2.0 006823d1759e40b4546ff4296945eda3f0692e799f724bb235edd0512d42eead
python_dateutil-2.9.0.post0 a9d436da322be808332f98d88325998e87cb693a678a9969feb4cfad729a6e93
python_dotenv-1.2.2 59430a9dee8f8118dbf693e41c4a3e5150626d19901f4727503da9499f5a64a1
python_multipart-0.0.34 7ae5098b90f36f21872617324c84a25d7d8b44426810d0e3edcd16bea35bff31
pyyaml-6.0.3 03c3b415ed38d09faedc49360e930769b40c58f68585e6de00e2e4916a858d34
referencing-0.37.0 c93b00e6ab1524fd60848376604c189a114374776475c25a31d57be47b29de6a
regex-2026.5.9 463d12c4755958eaa7a11d0aed2d0e5e629f67d03ef484677ee3c72d70eccf81
requests-2.34.2 8c384ba3e979480faae2859d3c5e6c1276dd2c3616e322e124d52c8cfc556f27
responses-0.26.0 764df7ed3f6bcbc8a92583d854e843fd75c74b54a2cdd4e80df55322b0255a68
rfc3339_validator-0.1.4 ac4dc2cdea6a8b61c16babbf35c0e9fa6e22e45f1c0338e66e089108dde872d2
rich-15.0.0 fad34fc603fac4481bf81f8dd629492fc302c0ec31909c86644751512afb2e3b
rpds_py-0.30.0 cc01d097ddb9c7e07a29c9553ee8dd35cf920e85fb574f7b0c23d68138a716bf
rsa-4.7.2 fc2e29e81f11c1fdfaddbbfc107c4166d223a6e3871e98d681c536fef69a9643
s3transfer-0.17.0 ef7aa5f96ad63334cd3723f94df7a40e9e315d5e30be4b74e46a94a765928e15
schemathesis-4.32.5 97c640efb9b84e29805ffdcd883cdc858b5283642d69002c0c5ae5aee07d49f0
scikit_learn-1.9.1 32e503c710a61e4e04be4edb450f9f8141233ac6af3f3db59a877667538fa4ec
scipy-1.17.1 7cdd5544eb610b86e000b6f0a21e86f84423faf0aacbb99990f3d41f25e1f314
six-1.17.0 562042078c2752549f6d8a7c86dbc5dd708088a7be6d80672ec7b07100b72468
sniffio-1.3.1 0b318b57098edeccf585e60a889a6b6a7b5c4086f3a9aa62eff76a1d3cee12d9
sortedcontainers-2.4.0 eedf115109e215001e904da0882851beae50b03c0b0161a8b9e74b7cfd679473
sse_starlette-3.7.0 234e15fc214a5648b4848c03be3226365c1d712c8471261227d04beb4cf392ac
stack_data-0.6.3 f28a66f2adde54e7031355e09a166e437bc0d023a31c10c973ac494288ca4c6f
starlette-1.10.0 82f72dde2c5c3c55d45d9461adce5e30973481f7f3e10b59e497bbc5b8abf598
sympy-1.14.0 b756c2fbfd5be05ac5bdb0ebca61f55618f30f633ed92d88a5687429313a7595
threadpoolctl-3.8.0 029ce653dcfe225efdebe95d40c6539948bb7048d15de74bb8d9899c88a3de4f
traitlets-5.15.0 2d4e570ec742addffa562a367665393ae77b21d1c28e34710309a801d2bd7edd
trio-0.22.2 497c7db6ff3c98956c646c9ba0a4abbfdc59314e8b0c2f7fdf36f86b85e8512e
truststore-0.10.5 1fd496f290853214e630d96f7163d2dd916f84ebe634b58aa827d6853e8f8610
typing_extensions-4.16.0 b05084ca1d50879865178d9fff9fabeab61bdfb1f361bfbde95421ffc8f9be46
typing_inspection-0.4.2 61096cd0bfe3c7040b6f98c22b02d190fe01936d0ff7616c5134fed02891953a
urllib3-2.7.0 66147856d30bbb6bed01c6ce3326d0f48d84ed5f286ac177633a1486b82eace5
uvicorn-0.54.0 9399e5ddda3d26e842d6fb5420c38b0857aac568d53badbdc224b3a21339efa8
wcwidth-0.7.0 611878142d836a2111d580d4debbfa2507bb290952811b6226a9c5989a4453b2
werkzeug-3.1.8 f57d29864fb04c6cbf2b4e844c108d62331f4621fd163cbced288f90dfd6d392
wrapt-2.1.2 d17ebf3700d3b215a2e14b03eb0f74ea7660d9e5ad0a4c39a17fe421f85c4e58
xmltodict-1.0.4 08b2908e0ceb1edc16c270e005d52d3484ecab089aa1bb3dbe5a896507f7f1e3
"""


def pinned():
    return [tuple(line.split()) for line in PINNED.strip().splitlines()]


def records_of(description):
    """Up to PER_PACKAGE records of whole paragraphs from the start of
    `description` (line endings read as `\\n`); a paragraph longer than
    MAX_CHARS is left out, and so are the paragraphs gathered before it that
    had not reached MIN_CHARS."""
    out, current = [], []
    description = description.replace("\r\n", "\n").replace("\r", "\n")
    for para in re.split(r"\n[ \t]*\n", description.strip()):
        para = para.strip("\n")
        if not para.strip():
            continue
        if len(para) > MAX_CHARS:
            current = []
            continue
        if current and len("\n\n".join(current + [para])) > MAX_CHARS:
            current = []
        current.append(para)
        text = "\n\n".join(current)
        if len(text) >= MIN_CHARS:
            out.append(text)
            current = []
            if len(out) == PER_PACKAGE:
                break
    return out


def build(directory):
    parts = Parts(TAG)
    packages = []
    for name, sha in pinned():
        path = directory / f"{name}.dist-info" / "METADATA"
        try:
            data = path.read_bytes()
        except OSError as e:
            raise SystemExit(f"{path}: {e} (see this script's doc for how to fetch it)")
        if hashlib.sha256(data).hexdigest() != sha:
            raise SystemExit(f"{path}: not the pinned file (SHA-256 differs)")
        packages.append((name, data.decode("utf-8")))
    rng = random.Random(SEED)
    packages.sort()
    rng.shuffle(packages)
    for i, (name, metadata) in enumerate(packages):
        part = "dev" if i % 2 == 0 else "validation"
        description = email.message_from_string(metadata).get_payload()
        for text in records_of(description):
            parts.add(part, text, False, f"benign-pypi:readme:{name}")
    return parts.records


def main():
    if sys.argv[1:] == ["--requirements"]:
        for name, _ in pinned():
            package, version = name.rsplit("-", 1)
            print(f"{package}=={version}")
        return
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    replace_and_report(TAG, "PyPI description", build(pathlib.Path(sys.argv[1])))


if __name__ == "__main__":
    main()
