"""Every PHP file parses (`php -l`), and the WHMCS module keeps to PHP 7.4 syntax and functions.

The module runs inside customers' WHMCS installs, many still on PHP 7.4; this machine has PHP 8.x,
so `php -l` alone would accept 8.x-only code. The second test tokenizes the module with PHP's own
tokenizer and refuses the constructs and functions 7.4 does not have.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PHP = shutil.which("php")
MODULE_DIR = ROOT / "whmcs"
PHP_FILES = sorted([*MODULE_DIR.rglob("*.php"), *(ROOT / "tests" / "php").rglob("*.php")])

pytestmark = [
    pytest.mark.php,
    pytest.mark.skipif(PHP is None, reason="php-cli is not installed (apt-get install php-cli php-curl)"),
]


def test_there_is_php_to_lint() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PHP_FILES}
    for required in ("computestacks.php", "hooks.php", "lib/Client.php"):
        assert f"whmcs/modules/servers/computestacks/{required}" in names


@pytest.mark.parametrize("path", PHP_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_php_lint(path: Path) -> None:
    assert PHP is not None
    proc = subprocess.run([PHP, "-l", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# Tokens and functions PHP 7.4 does not know. Union types and named arguments are caught by the
# token patterns below (a `|` inside a parameter list, an identifier followed by `:` in a call).
_CHECKER = r"""
$bad = array();
$newTokens = array('T_MATCH' => 'match expression', 'T_ENUM' => 'enum', 'T_READONLY' => 'readonly',
    'T_NULLSAFE_OBJECT_OPERATOR' => 'nullsafe ?->', 'T_ATTRIBUTE' => 'attribute #[...]');
$newFunctions = array('str_contains', 'str_starts_with', 'str_ends_with', 'array_is_list', 'get_debug_type',
    'fdiv', 'get_resource_id', 'preg_last_error_msg', 'enum_exists', 'array_any', 'array_all', 'array_find');
foreach (array_slice($argv, 1) as $file) {
    $tokens = token_get_all(file_get_contents($file));
    $code = array();
    foreach ($tokens as $t) {
        if (is_array($t) && in_array($t[0], array(T_WHITESPACE, T_COMMENT, T_DOC_COMMENT), true)) {
            continue;
        }
        $code[] = $t;
    }
    $depthInParams = 0;
    $inSignature = false;
    for ($i = 0; $i < count($code); $i++) {
        $t = $code[$i];
        if (is_array($t)) {
            $name = token_name($t[0]);
            if (isset($newTokens[$name])) {
                $bad[] = "$file:{$t[2]}: {$newTokens[$name]}";
            }
            if ($t[0] === T_STRING && in_array(strtolower($t[1]), $newFunctions, true)
                && isset($code[$i + 1]) && $code[$i + 1] === '(') {
                $prev = isset($code[$i - 1]) ? $code[$i - 1] : null;
                $isMethod = is_array($prev)
                    && in_array($prev[0], array(T_OBJECT_OPERATOR, T_DOUBLE_COLON, T_FUNCTION), true);
                if (!$isMethod) {
                    $bad[] = "$file:{$t[2]}: PHP 8 function {$t[1]}()";
                }
            }
            if ($t[0] === T_FUNCTION || $t[0] === T_FN) {
                $inSignature = true;
                $depthInParams = 0;
            }
            // named argument: identifier ':' directly after '(' or ','
            if ($t[0] === T_STRING && isset($code[$i + 1]) && $code[$i + 1] === ':' && !$inSignature
                && isset($code[$i - 1]) && ($code[$i - 1] === '(' || $code[$i - 1] === ',')
                && !(isset($code[$i + 2]) && $code[$i + 2] === ':')) {
                $bad[] = "$file:{$t[2]}: named argument {$t[1]}:";
            }
            continue;
        }
        if ($inSignature) {
            if ($t === '(') {
                $depthInParams++;
            } elseif ($t === ')') {
                $depthInParams--;
                if ($depthInParams === 0) {
                    $inSignature = false;
                }
            } elseif ($t === '|' && $depthInParams === 1) {
                $bad[] = "$file: union type in a signature";
            } elseif ($t === '{' || $t === ';') {
                $inSignature = false;
            }
        }
    }
}
echo json_encode($bad);
"""


def test_module_keeps_to_php_74() -> None:
    assert PHP is not None
    module_files = [str(p) for p in PHP_FILES if MODULE_DIR in p.parents]
    proc = subprocess.run(
        [PHP, "-r", _CHECKER, "--", *module_files], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
