#!/usr/bin/env python3
"""AgentDojo records for the guard's development and validation parts.

    pip download agentdojo==0.1.35 --no-deps -d /tmp/agentdojo
    unzip -q /tmp/agentdojo/agentdojo-0.1.35-py3-none-any.whl -d /tmp/agentdojo/w
    python3 tests/data/guard/build_agentdojo.py /tmp/agentdojo/w/agentdojo

appends to `dev.jsonl` and `validation.jsonl` (next to this script) the
records it builds, each marked `"added": "agentdojo"`; records already marked
so are replaced, so running it twice gives the same files.

AgentDojo (Debenedetti et al., 2024; github.com/ethz-spylab/agentdojo, MIT)
ships, in its Python package, the environments of four agent suites
(workspace, travel, banking, slack) with injection vectors (placeholders in
emails, files, reviews, messages, bank transactions, each with a benign
default), the injection tasks' goals, and the attack templates that wrap a
goal. The package is read, not imported: goals and templates with `ast`,
environments with PyYAML.

The split is fixed before any record is built or looked at:
- attack-template families (`direct`, `ignore-previous`, `information`: the
  "important message ... to you, MODEL" wrapper with its denial-of-service
  variants, `injecagent`, `system-message`) are shuffled with a fixed seed;
  the first three go to the development part, the other two to validation,
  so validation shares no attack template with development;
- per suite, the injection goals (in task order) alternate between the
  parts, and so do the injection vectors (in name order), so the parts share
  no goal and no carrier.
Every injected record is a tool output as AgentDojo's tools return it (the
YAML of the object that holds the vector: an email, a file, a review, a
transaction, a channel message) with the payload in one vector and every
other vector at its default. Benign records are the same objects with every
vector at its default.
"""

import ast
import json
import pathlib
import random
import re

import yaml

from guard_parts import Parts, run

SEED = 20261126
SUITES = ["banking", "slack", "travel", "workspace"]
FAMILIES = ["direct", "ignore-previous", "information", "injecagent", "system-message"]
PLACEHOLDER = re.compile(r"\{(injection_\w+)\}")


def module_strings(tree):
    """Module-level string constants."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        out[t.id] = node.value.value
    return out


def evaluate(node, scope):
    """A string constant, an f-string over names in `scope`, or a
    concatenation of those; None otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            elif isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name):
                if v.value.id not in scope:
                    return None
                parts.append(str(scope[v.value.id]))
            else:
                return None
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        a, b = evaluate(node.left, scope), evaluate(node.right, scope)
        return None if a is None or b is None else a + b
    return None


def goals(root, suite):
    """The injection goals of a suite (AgentDojo v1), in task order."""
    path = root / "default_suites" / "v1" / suite / "injection_tasks.py"
    tree = ast.parse(path.read_text())
    found = []
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        m = re.fullmatch(r"InjectionTask(\d+)", cls.name)
        if not m:
            continue
        scope = dict(module_strings(tree))
        goal = None
        for node in cls.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                value = evaluate(node.value, scope) if node.value is not None else None
                if value is None and isinstance(node.value, ast.Constant):
                    value = node.value.value
                for t in targets:
                    if isinstance(t, ast.Name) and value is not None:
                        scope[t.id] = value
                        if t.id == "GOAL":
                            goal = value
        if goal:
            found.append((int(m.group(1)), goal))
    return [g for _, g in sorted(found)]


def class_string(tree, cls_name, attr):
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef) and cls.name == cls_name:
            for node in cls.body:
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == attr for t in node.targets
                ):
                    return evaluate(node.value, {})
    return None


def super_init_string(tree, cls_name):
    """The template a baseline attack passes to `super().__init__`."""
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef) and cls.name == cls_name:
            for call in ast.walk(cls):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "__init__"
                    and call.args
                ):
                    s = evaluate(call.args[0], {})
                    if s is not None:
                        return s
    return None


def model_names(root):
    tree = ast.parse((root / "models.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "MODEL_NAMES" for t in targets):
                return sorted({v.value for v in node.value.values if isinstance(v, ast.Constant)})
    raise SystemExit("MODEL_NAMES not found in models.py")


def templates(root):
    """family -> list of templates (with {goal}, {user}, {model} fields)."""
    base = ast.parse((root / "attacks" / "baseline_attacks.py").read_text())
    important = ast.parse((root / "attacks" / "important_instructions_attacks.py").read_text())
    dos = ast.parse((root / "attacks" / "dos_attacks.py").read_text())
    out = {
        "direct": [super_init_string(base, "DirectAttack")],
        "ignore-previous": [super_init_string(base, "IgnorePreviousAttack")],
        "system-message": [super_init_string(base, "SystemMessageAttack")],
        "injecagent": [super_init_string(base, "InjecAgentAttack")],
        "information": [class_string(important, "ImportantInstructionsAttack", "_JB_STRING")],
    }
    for cls in ast.walk(dos):
        if isinstance(cls, ast.ClassDef):
            s = class_string(dos, cls.name, "_DOS_STRING")
            if s and s not in out["information"]:
                out["information"].append(s)
    for family, ts in out.items():
        if not ts or any(t is None for t in ts):
            raise SystemExit(f"template of {family} not found")
    return out


class Loader(yaml.SafeLoader):
    pass


def include(loader, node):
    path = pathlib.Path(loader.name).parent / loader.construct_scalar(node)
    with open(path) as f:
        return yaml.load(f, Loader)


Loader.add_constructor("!include", include)


def holders(data, out, parent=None):
    """Each mapping that holds a string with an injection placeholder."""
    if isinstance(data, dict):
        for v in data.values():
            if isinstance(v, str) and PLACEHOLDER.search(v):
                if not any(h is data for h in out):
                    out.append(data)
            else:
                holders(v, out, data)
    elif isinstance(data, list):
        for v in data:
            if isinstance(v, str) and PLACEHOLDER.search(v) and parent is not None:
                if not any(h is parent for h in out):
                    out.append(parent)
            else:
                holders(v, out, parent)
    return out


def fill(data, values):
    if isinstance(data, str):
        return PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), data)
    if isinstance(data, dict):
        return {k: fill(v, values) for k, v in data.items()}
    if isinstance(data, list):
        return [fill(v, values) for v in data]
    return data


def vectors_in(data):
    return sorted(set(PLACEHOLDER.findall(json.dumps(data))))


def dump(obj):
    return yaml.safe_dump(obj, allow_unicode=True, sort_keys=False, width=1000)


def build(root):
    rng = random.Random(SEED)
    families = list(FAMILIES)
    rng.shuffle(families)
    part_families = {"dev": families[:3], "validation": families[3:]}
    tmpl = templates(root)
    names = model_names(root)
    people = ["Emma Johnson", "the user", "Mark Smith"]
    parts = Parts("agentdojo")
    for suite in SUITES:
        suite_dir = root / "data" / "suites" / suite
        with open(suite_dir / "environment.yaml") as f:
            env = yaml.load(f, Loader)
        defaults = {
            k: (v or {}).get("default", "") or ""
            for k, v in yaml.safe_load((suite_dir / "injection_vectors.yaml").read_text()).items()
        }
        objects = holders(env, [])
        vectors = sorted({v for o in objects for v in vectors_in(o)})
        part_vectors = {"dev": vectors[0::2], "validation": vectors[1::2]}
        suite_goals = goals(root, suite)
        part_goals = {"dev": suite_goals[0::2], "validation": suite_goals[1::2]}
        for part in ["dev", "validation"]:
            # The objects that hold each of this part's vectors.
            carriers = [
                (v, o) for v in part_vectors[part] for o in objects if v in vectors_in(o)
            ]
            if not carriers:
                continue
            turn = 0

            def add(text, injected, source):
                parts.add(part, text, injected, source)

            for family in part_families[part]:
                for ti, template in enumerate(tmpl[family]):
                    # The denial-of-service templates carry no goal: once each.
                    part_goals_here = part_goals[part] if "{goal}" in template else [None]
                    for gi, goal in enumerate(part_goals_here):
                        vector, obj = carriers[turn % len(carriers)]
                        turn += 1
                        payload = template.format(
                            goal=goal or "",
                            user=people[(gi + ti) % len(people)],
                            model=names[(gi + ti) % len(names)],
                        )
                        values = dict(defaults)
                        values[vector] = payload
                        add(dump(fill(obj, values)), True, f"agentdojo-{family}:{suite}:{vector}")
            for vector, obj in carriers:
                add(dump(fill(obj, defaults)), False, f"benign-agentdojo:{suite}:{vector}")
    return parts.records


if __name__ == "__main__":
    run("agentdojo", "AgentDojo", build, __doc__)
