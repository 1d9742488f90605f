"""Translate template.yaml the way `sam validate` does, offline, and print the CloudFormation as JSON.

Run with the SAM CLI's own interpreter (`.tools/sam/bin/python`, installed by `make sam`), so the
translator is exactly the one `sam validate --lint` uses. The managed-policy loader is stubbed: the
template names SAM policy templates and inline statements only, never an AWS managed policy by name,
so no IAM call is needed (an unknown managed policy name would make the translation fail loudly).
"""

from __future__ import annotations

import json
import sys


class OfflinePolicyLoader:
    def load(self) -> dict[str, str]:
        return {}


def main(path: str) -> int:
    import yaml
    from samcli.lib.translate.sam_template_validator import SamTemplateValidator
    from samcli.yamlhelper import yaml_parse

    with open(path, encoding="utf-8") as fh:
        template = yaml_parse(fh.read())
    validator = SamTemplateValidator(template, OfflinePolicyLoader(), region="us-east-1")
    translated = yaml.safe_load(validator.get_translated_template_if_valid())
    json.dump(translated, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
