<?php
/**
 * Test driver for the ComputeStacks WHMCS module: runs module functions the way WHMCS would and
 * prints one JSON document with what each returned and what the module handed to WHMCS.
 *
 * Environment:
 *   CSW_API_HOST        the backend's host[:port][/base path], e.g. 127.0.0.1:3000 (server Hostname)
 *   CSW_SIGNING_SECRET  the server's Access Hash (signing secret)
 *   CSW_SCENARIO        a JSON scenario, or the path of a file holding one
 *   CSW_TIMEOUT, CSW_CONNECT_TIMEOUT  optional: the module's time limits in seconds (COMPUTESTACKS_*)
 *   CSW_SYNC_PAGE_SIZE  optional: users per Server Sync answer
 *
 * Scenario:
 *   {
 *     "params": {...},             module $params merged over the defaults below
 *     "localapi_proxy": {"url", "identifier", "secret"} | null   localAPI answered by a WHMCS (sandbox) API
 *     "secrets": ["..."],          extra values that must never reach the stored module log
 *     "steps": [
 *       {"name": "create", "fn": "CreateAccount", "params": {...}, "unset": ["key"], "model": true},
 *       {"name": "groups", "fn": "UserGroupLoader"},   (exceptions are reported as {"exception": msg})
 *       {"name": "hook", "fn": "OrderPaid", "vars": {"orderId", "invoiceId", "userId"},
 *        "capsule": {"tblproducts": [...]} | absent, "module_servers": {"<serviceid>": {...server params}},
 *        "localapi": {"Action": {...answer}}, "via_hook": false}
 *       {"name": "paid", "fn": "InvoicePaid", "vars": {"invoiceid"}, ...the same keys as OrderPaid}
 *     ]
 *   }
 * Each step reports "seconds": how long the module function took.
 * Every step's service password, SSO token and server secrets are audited against the module log:
 * "log_audit.leaks" lists any that WHMCS would have stored unmasked.
 */

error_reporting(E_ALL);
ini_set('display_errors', 'stderr');

require __DIR__ . '/stubs.php';

$moduleDir = dirname(__DIR__, 2) . '/whmcs/modules/servers/computestacks';
// Lets a test page the Server Sync with small pages (the module's default is 2,000 users per answer).
if (getenv('CSW_SYNC_PAGE_SIZE') !== false) {
    define('COMPUTESTACKS_SYNC_PAGE_SIZE', (int) getenv('CSW_SYNC_PAGE_SIZE'));
}
// Lets a test lower the module's time limits (seconds; production: 30 s total, 5 s connect).
if (getenv('CSW_TIMEOUT') !== false) {
    define('COMPUTESTACKS_TIMEOUT', (float) getenv('CSW_TIMEOUT'));
}
if (getenv('CSW_CONNECT_TIMEOUT') !== false) {
    define('COMPUTESTACKS_CONNECT_TIMEOUT', (float) getenv('CSW_CONNECT_TIMEOUT'));
}
require_once $moduleDir . '/computestacks.php';

$phpErrors = array();
set_error_handler(function ($severity, $message, $file, $line) use (&$phpErrors) {
    $phpErrors[] = sprintf('%s:%d: %s', basename($file), $line, $message);
    return true;
});

$sleeps = array();
\CSWhmcs\Client::$sleeper = function ($microseconds) use (&$sleeps) {
    $sleeps[] = $microseconds;
};

function csw_driver_fail($message)
{
    fwrite(STDERR, 'driver: ' . $message . "\n");
    exit(2);
}

$apiHost = getenv('CSW_API_HOST');
$signingSecret = getenv('CSW_SIGNING_SECRET');
$scenarioRaw = getenv('CSW_SCENARIO');
if ($apiHost === false || $signingSecret === false || $scenarioRaw === false) {
    csw_driver_fail('CSW_API_HOST, CSW_SIGNING_SECRET and CSW_SCENARIO are required');
}
if (strlen($scenarioRaw) > 0 && $scenarioRaw[0] !== '{' && is_file($scenarioRaw)) {
    $scenarioRaw = (string) file_get_contents($scenarioRaw);
}
$scenario = json_decode($scenarioRaw, true);
if (!is_array($scenario)) {
    csw_driver_fail('CSW_SCENARIO is not a JSON object');
}

// A realistic $params (whmcs-contract.md section 1), pointed at the backend under test.
$defaults = array(
    'accountid' => 42,
    'serviceid' => 42,
    'addonId' => 0,
    'userid' => 7,
    'pid' => 3,
    'serverid' => 1,
    'domain' => '',
    'username' => '',
    'password' => 'Xy7pQ2mN4k',
    'producttype' => 'other',
    'moduletype' => 'computestacks',
    'configoption1' => '1',
    'configoption2' => 'on',
    'customfields' => array(),
    'configoptions' => array(),
    'server' => true,
    'serverip' => '',
    'serverhostname' => $apiHost,
    'serverusername' => 'not-used-username',
    'serverpassword' => 'not-used-server-password-7Hq',
    'serveraccesshash' => $signingSecret,
    'serversecure' => false,
    'serverport' => '',
    'serverhttpprefix' => 'http',
    'status' => 'Pending',
    'clientsdetails' => array(
        'client_id' => 7, 'userid' => 7, 'id' => 7, 'uuid' => 'a3c1f1de-6c46-4a36-9a2e-6f0d8f0b3c11',
        'firstname' => 'Ann', 'lastname' => 'Lee', 'fullname' => 'Ann Lee', 'companyname' => '',
        'email' => 'ann@example.org', 'address1' => '1 Main St', 'address2' => '', 'city' => 'Portland',
        'state' => 'Oregon', 'fullstate' => 'Oregon', 'statecode' => 'OR', 'postcode' => '97201',
        'country' => 'US', 'countrycode' => 'US', 'countryname' => 'United States', 'phonecc' => 1,
        'phonenumber' => '5035550100', 'phonenumberformatted' => '+1.5035550100',
        'telephoneNumber' => '+1.5035550100', 'tax_id' => '', 'currency' => 1, 'currency_code' => 'USD',
        'language' => '', 'status' => 'Active', 'credit' => '0.00', 'groupid' => 0,
    ),
);
$base = array_merge($defaults, isset($scenario['params']) && is_array($scenario['params']) ? $scenario['params'] : array());

if (isset($scenario['localapi_proxy']) && is_array($scenario['localapi_proxy'])) {
    $GLOBALS['CSW_STUB']['localapi_proxy'] = $scenario['localapi_proxy'];
}

// Values that must never be stored unmasked in the module log.
$mustMask = array();
$addSecret = function ($value) use (&$mustMask) {
    if (!is_scalar($value) || (string) $value === '') {
        return;
    }
    $value = (string) $value;
    $mustMask[$value] = true;
    // As it appears inside a JSON body or response (quotes, backslashes, maybe slashes escaped).
    foreach (array(JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE, 0) as $flags) {
        $encoded = json_encode($value, $flags);
        if (is_string($encoded) && strlen($encoded) > 2) {
            $mustMask[substr($encoded, 1, -1)] = true;
        }
    }
};
$addSecret($signingSecret);
foreach (explode(',', $signingSecret) as $part) {
    $addSecret(trim($part));
}
foreach (isset($scenario['secrets']) ? (array) $scenario['secrets'] : array() as $value) {
    $addSecret($value);
}

$coreFunctions = array(
    'CreateAccount', 'SuspendAccount', 'UnsuspendAccount', 'TerminateAccount', 'ChangePassword',
    'ChangePackage', 'ServiceSingleSignOn', 'TestConnection', 'ListAccounts', 'ClientArea',
    'AdminServicesTabFields', 'UserGroupLoader', 'ConfigOptions', 'MetaData',
);

$out = array('steps' => array());
foreach ((array) $scenario['steps'] as $index => $step) {
    $name = isset($step['name']) ? (string) $step['name'] : ('step' . $index);
    $fn = isset($step['fn']) ? (string) $step['fn'] : '';
    $logBefore = count($GLOBALS['CSW_STUB']['module_log']);
    $activityBefore = count($GLOBALS['CSW_STUB']['activity']);
    $record = array('name' => $name, 'fn' => $fn);

    $params = array_merge($base, isset($step['params']) && is_array($step['params']) ? $step['params'] : array());
    foreach (isset($step['unset']) ? (array) $step['unset'] : array() as $key) {
        unset($params[$key]);
    }
    foreach (array('password', 'serverpassword', 'serveraccesshash') as $key) {
        if (isset($params[$key])) {
            $addSecret($params[$key]);
            foreach (explode(',', (string) $params[$key]) as $part) {
                $addSecret(trim($part));
            }
        }
    }
    $model = null;
    if (!empty($step['model'])) {
        $model = new CswStubServiceModel(isset($params['serviceid']) ? $params['serviceid'] : 0);
        $params['model'] = $model;
    }

    $stepStarted = microtime(true);
    try {
        if ($fn === 'OrderPaid' || $fn === 'InvoicePaid') {
            require_once $moduleDir . '/hooks.php';
            if (isset($step['capsule']) && is_array($step['capsule'])) {
                csw_stub_enable_capsule($step['capsule']);
            }
            if (isset($step['module_servers']) && is_array($step['module_servers'])) {
                csw_stub_enable_module_server($step['module_servers']);
                foreach ($step['module_servers'] as $serverParams) {
                    if (isset($serverParams['serveraccesshash'])) {
                        $addSecret($serverParams['serveraccesshash']);
                    }
                }
            }
            $GLOBALS['CSW_STUB']['localapi_script'] = isset($step['localapi']) && is_array($step['localapi'])
                ? $step['localapi'] : array();
            $vars = isset($step['vars']) && is_array($step['vars']) ? $step['vars'] : array();
            if (!empty($step['via_hook'])) {
                $called = 0;
                foreach ($GLOBALS['CSW_STUB']['hooks'] as $hook) {
                    if ($hook['point'] === $fn) {
                        $answer = call_user_func($hook['function'], $vars);
                        $called++;
                    }
                }
                $record['result'] = array('hooks_called' => $called, 'returned' => isset($answer) ? $answer : null);
            } elseif ($fn === 'InvoicePaid') {
                $record['result'] = computestacks_handle_invoice_paid($vars);
            } else {
                $record['result'] = computestacks_handle_order_paid($vars);
            }
            $record['localapi_calls'] = array_map(function ($call) {
                return $call['action'];
            }, $GLOBALS['CSW_STUB']['localapi_calls']);
            $GLOBALS['CSW_STUB']['localapi_calls'] = array();
        } elseif ($fn === 'Hooks') {
            require_once $moduleDir . '/hooks.php';
            $record['result'] = array_map(function ($hook) {
                return array('point' => $hook['point'], 'priority' => $hook['priority'],
                    'callable' => is_callable($hook['function']));
            }, $GLOBALS['CSW_STUB']['hooks']);
        } elseif (in_array($fn, $coreFunctions, true)) {
            $function = 'computestacks_' . $fn;
            if ($fn === 'MetaData') {
                $record['result'] = $function();
            } elseif ($fn === 'ConfigOptions') {
                $record['result'] = $function(array());
            } else {
                $record['result'] = $function($params);
            }
        } else {
            $record['result'] = array('exception' => 'driver: unknown fn ' . $fn);
        }
    } catch (\Throwable $e) {
        $record['result'] = array('exception' => $e->getMessage(), 'class' => get_class($e));
    }
    $record['seconds'] = round(microtime(true) - $stepStarted, 3);

    if ($fn === 'ServiceSingleSignOn' && is_array($record['result']) && !empty($record['result']['redirectTo'])) {
        $query = (string) parse_url($record['result']['redirectTo'], PHP_URL_QUERY);
        parse_str($query, $queryParams);
        foreach ($queryParams as $key => $value) {
            if (stripos($key, 'token') !== false && is_string($value)) {
                $addSecret($value);
                $addSecret(rawurlencode($value));
            }
        }
        $addSecret($record['result']['redirectTo']);
    }
    if ($model !== null) {
        $record['saved_properties'] = $model->serviceProperties->saved;
    }
    $newLog = array_slice($GLOBALS['CSW_STUB']['module_log'], $logBefore);
    $record['module_log'] = array_map(function ($entry) {
        return array('action' => $entry['action'], 'request' => $entry['stored']['request'],
            'response' => $entry['stored']['response']);
    }, $newLog);
    $record['activity'] = array_slice($GLOBALS['CSW_STUB']['activity'], $activityBefore);
    $out['steps'][] = $record;
}

// The audit: nothing secret stored, and every secret the module handed over was in $replaceVars.
$leaks = array();
$unlisted = array();
$entriesWithoutReplaceVars = 0;
foreach ($GLOBALS['CSW_STUB']['module_log'] as $i => $entry) {
    if ($entry['module'] !== 'computestacks') {
        $leaks[] = array('entry' => $i, 'problem' => 'module name ' . $entry['module']);
    }
    if (!$entry['replace_vars']) {
        $entriesWithoutReplaceVars++;
    }
    foreach (array_keys($mustMask) as $secret) {
        $secret = (string) $secret;
        foreach ($entry['stored'] as $part => $text) {
            if (strpos($text, $secret) !== false) {
                $leaks[] = array('entry' => $i, 'action' => $entry['action'], 'part' => $part,
                    'secret_length' => strlen($secret));
            }
        }
        foreach ($entry['raw'] as $part => $text) {
            if (strpos($text, $secret) !== false && !in_array($secret, $entry['replace_vars'], true)) {
                $unlisted[] = array('entry' => $i, 'action' => $entry['action'], 'part' => $part,
                    'secret_length' => strlen($secret));
            }
        }
    }
}
$out['log_audit'] = array(
    'entries' => count($GLOBALS['CSW_STUB']['module_log']),
    'entries_without_replace_vars' => $entriesWithoutReplaceVars,
    'secrets_checked' => count($mustMask),
    'leaks' => $leaks,
    'unlisted' => $unlisted,
);
$out['hooks'] = array_map(function ($hook) {
    return array('point' => $hook['point'], 'priority' => $hook['priority']);
}, $GLOBALS['CSW_STUB']['hooks']);
$out['retry_sleeps'] = $sleeps;
$out['php_errors'] = $phpErrors;

echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRETTY_PRINT | JSON_PARTIAL_OUTPUT_ON_ERROR), "\n";
