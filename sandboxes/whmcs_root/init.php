<?php
/**
 * Test/dev stand-in for WHMCS's init.php (never shipped with the module).
 *
 * What a file under modules/ gets after `require_once __DIR__ . '/../../../init.php';` in a real WHMCS:
 *   - WHMCS\Database\Capsule: Illuminate's Capsule manager on the WHMCS database (Debian's php-illuminate-database,
 *     the same library WHMCS bundles), set as global;
 *   - localAPI() for GetClientsDetails and AddBillableItem, answering as WHMCS does (shapes and error strings from
 *     shared/reference/whmcs-contract.md section 3.2) and writing ON THE SAME CONNECTION, so the caller's
 *     transaction covers the billable item;
 *   - logModuleCall() (tblmodulelog, replaceVars masked) and logActivity() (tblactivitylog).
 *
 * The database comes from the environment (sandboxes/whmcsdb.py WhmcsDatabase.php_env()):
 *   CSW_DB_DRIVER=mysql + CSW_DB_SOCKET + CSW_DB_NAME (+ CSW_DB_USER, default root), or
 *   CSW_DB_DRIVER=sqlite + CSW_DB_PATH.
 * CSW_WHMCS_VERSION (default 8.10.1) selects AddBillableItem's unit rules (8.2+ requires `unit`).
 * Test knobs: knobs.json beside this file, re-read on every request:
 *   pause_after_add (seconds)  sleep after AddBillableItem inserted the item, i.e. inside the caller's transaction
 *                              (a file in paused/ exists while a request sleeps);
 *   notice_in_bootstrap (bool) raise a PHP notice and echo a warning during bootstrap (a badly-behaved addon);
 *   add_error (string)         every AddBillableItem answers result=error with this message.
 */

define('WHMCS', true);
define('ROOTDIR', __DIR__);

require_once '/usr/share/php/Illuminate/Database/autoload.php';

use Illuminate\Database\Capsule\Manager as CswCapsuleManager;

/** The knobs of this request (knobs.json; missing or broken file: none). */
function csw_sandbox_knobs()
{
    static $knobs = null;
    if ($knobs === null) {
        $knobs = array();
        $file = __DIR__ . '/knobs.json';
        if (is_file($file)) {
            $decoded = json_decode((string) @file_get_contents($file), true);
            if (is_array($decoded)) {
                $knobs = $decoded;
            }
        }
    }
    return $knobs;
}

function csw_sandbox_knob($name, $default = null)
{
    $knobs = csw_sandbox_knobs();
    return array_key_exists($name, $knobs) ? $knobs[$name] : $default;
}

$cswKnobs = csw_sandbox_knobs();
if (!empty($cswKnobs['notice_in_bootstrap'])) {
    // What a careless addon hook does on every page load: a notice (displayed: display_errors=1) and stray output.
    trigger_error('Undefined index: csw_addon_setting in /var/www/whmcs/modules/addons/careless/hooks.php',
        E_USER_NOTICE);
    echo "Warning: careless addon printed this during the bootstrap\n";
}

$cswDriver = getenv('CSW_DB_DRIVER') ?: 'sqlite';
if ($cswDriver === 'mysql') {
    $cswConfig = array(
        'driver' => 'mysql',
        'unix_socket' => (string) getenv('CSW_DB_SOCKET'),
        'database' => (string) getenv('CSW_DB_NAME'),
        'username' => getenv('CSW_DB_USER') ?: 'root',
        'password' => '',
        'charset' => 'utf8mb4',
        'collation' => 'utf8mb4_unicode_ci',
        'prefix' => '',
        'strict' => true,
        'engine' => 'InnoDB',
    );
} else {
    $cswConfig = array(
        'driver' => 'sqlite',
        'database' => (string) getenv('CSW_DB_PATH'),
        'prefix' => '',
        // PDO's timeout is SQLite's busy timeout: concurrent writers wait for the lock instead of failing.
        'options' => array(PDO::ATTR_TIMEOUT => 30),
    );
}

$cswCapsule = new CswCapsuleManager();
$cswCapsule->addConnection($cswConfig);
$cswCapsule->setAsGlobal();
if (!class_exists('WHMCS\\Database\\Capsule', false)) {
    class_alias('Illuminate\\Database\\Capsule\\Manager', 'WHMCS\\Database\\Capsule');
}
if ($cswDriver !== 'mysql') {
    $cswPdo = CswCapsuleManager::connection()->getPdo();
    $cswPdo->exec('PRAGMA busy_timeout = 30000');
    $cswPdo->exec('PRAGMA journal_mode = WAL');
}
unset($cswConfig, $cswCapsule, $cswPdo, $cswDriver, $cswKnobs);

/** WHMCS version as [major, minor, patch] (CSW_WHMCS_VERSION). */
function csw_sandbox_version()
{
    $parts = explode('.', getenv('CSW_WHMCS_VERSION') ?: '8.10.1');
    return array((int) $parts[0], isset($parts[1]) ? (int) $parts[1] : 0, isset($parts[2]) ? (int) $parts[2] : 0);
}

/** The client array as GetClientsDetails returns it, or null. */
function csw_sandbox_client($clientId, $email)
{
    $query = CswCapsuleManager::table('tblclients');
    if ($clientId !== null && $clientId !== '') {
        $query->where('tblclients.id', (int) $clientId);
    } else {
        $query->where('tblclients.email', (string) $email);
    }
    $row = $query->leftJoin('tblcurrencies', 'tblcurrencies.id', '=', 'tblclients.currency')
        ->select('tblclients.*', 'tblcurrencies.code as currency_code', 'tblcurrencies.prefix as currency_prefix',
            'tblcurrencies.suffix as currency_suffix')
        ->first();
    if ($row === null) {
        return null;
    }
    $row = (array) $row;
    $client = array(
        'userid' => (int) $row['id'],
        'client_id' => (int) $row['id'],
        'id' => (int) $row['id'],
        'uuid' => sprintf('00000000-0000-4000-8000-%012d', (int) $row['id']),
        'firstname' => $row['firstname'],
        'lastname' => $row['lastname'],
        'fullname' => trim($row['firstname'] . ' ' . $row['lastname']),
        'companyname' => $row['companyname'],
        'email' => $row['email'],
        'country' => $row['country'],
        'status' => $row['status'],
        'currency' => (int) $row['currency'],
        'currency_code' => (string) $row['currency_code'],
        'credit' => number_format((float) $row['credit'], 2, '.', ''),
        'datecreated' => $row['datecreated'],
        'users' => array('user' => array()),
    );
    return $client;
}

function csw_sandbox_get_clients_details(array $values)
{
    $clientId = isset($values['clientid']) ? $values['clientid'] : null;
    $email = isset($values['email']) ? $values['email'] : null;
    if (($clientId === null || $clientId === '') && ($email === null || $email === '')) {
        return array('result' => 'error', 'message' => 'Either clientid Or email Is Required');
    }
    $client = csw_sandbox_client($clientId, $email);
    if ($client === null) {
        return array('result' => 'error', 'message' => 'Client Not Found');
    }
    // WHMCS also duplicates the client's fields at the top level (deprecated) and answers currency_code there.
    $answer = array_merge(array('result' => 'success'), $client, array('client' => $client));
    if (!empty($values['stats'])) {
        $answer['stats'] = array('numoverdueinvoices' => 0, 'creditbalance' => $client['credit']);
    }
    return $answer;
}

function csw_sandbox_valid_date($text)
{
    if (!is_string($text) || !preg_match('/^(\d{4})-(\d{2})-(\d{2})$/D', $text, $m)) {
        return false;
    }
    return checkdate((int) $m[2], (int) $m[3], (int) $m[1]);
}

function csw_sandbox_add_billable_item(array $values)
{
    $knob = csw_sandbox_knob('add_error');
    if (is_string($knob) && $knob !== '') {
        return array('result' => 'error', 'message' => $knob);
    }
    $clientId = isset($values['clientid']) ? (int) $values['clientid'] : 0;
    if ($clientId <= 0 || !CswCapsuleManager::table('tblclients')->where('id', $clientId)->exists()) {
        return array('result' => 'error', 'message' => 'Client ID not Found');
    }
    $description = isset($values['description']) ? (string) $values['description'] : '';
    if (!$description || trim($description) === '') {  // PHP truthiness: "0" is no description either
        return array('result' => 'error', 'message' => 'You must provide a description');
    }
    $action = isset($values['invoiceaction']) ? (string) $values['invoiceaction'] : 'noinvoice';
    if (!in_array($action, array('noinvoice', 'nextcron', 'nextinvoice', 'duedate', 'recur'), true)) {
        return array('result' => 'error', 'message' => 'Invalid Invoice Action');
    }
    $recur = isset($values['recur']) ? (int) $values['recur'] : 0;
    $recurCycle = isset($values['recurcycle']) ? (string) $values['recurcycle'] : '';
    $recurFor = isset($values['recurfor']) ? (int) $values['recurfor'] : 0;
    if ($action === 'recur' && ($recur <= 0 || $recurCycle === '' || $recurFor <= 0)) {
        return array('result' => 'error', 'message' => 'Recurring must have a unit, cycle and limit');
    }
    $dueDate = isset($values['duedate']) ? (string) $values['duedate'] : '';
    if (($action === 'duedate' || $action === 'recur') && $dueDate === '') {
        return array('result' => 'error', 'message' => 'Due date is required');
    }
    $version = csw_sandbox_version();
    $modern = $version[0] > 8 || ($version[0] === 8 && $version[1] >= 2);
    if ($modern) {
        $unit = isset($values['unit']) ? (string) $values['unit'] : '';
        if (!in_array($unit, array('hours', 'quantity'), true)) {
            return array('result' => 'error', 'message' => "Invalid Unit, please specify either 'hours' or 'quantity'");
        }
        $quantity = isset($values['quantity']) ? $values['quantity'] : (isset($values['hours']) ? $values['hours'] : 0);
    } else {
        $unit = 'hours';  // before 8.2: no unit, the quantity is `hours`
        $quantity = isset($values['hours']) ? $values['hours'] : 0;
    }
    if ($dueDate !== '' && !csw_sandbox_valid_date($dueDate)) {
        return array('result' => 'error', 'message' => "Invalid Date Format - Expected: 'YYYY-mm-dd'");
    }
    $id = CswCapsuleManager::table('tblbillableitems')->insertGetId(array(
        'userid' => $clientId,
        'description' => $description,
        'hours' => (string) $quantity,
        'amount' => isset($values['amount']) ? (string) $values['amount'] : '0.00',
        'unit' => $unit,
        'recur' => $recur,
        'recurcycle' => $recurCycle,
        'recurfor' => $recurFor,
        'invoiceaction' => $action,
        'duedate' => $dueDate !== '' ? $dueDate : null,
        'invoicecount' => 0,
    ));
    $pause = csw_sandbox_knob('pause_after_add');
    if (is_numeric($pause) && $pause > 0) {
        // A marker file while asleep, so a test knows the request is inside its transaction now.
        $marker = __DIR__ . '/paused/' . getmypid() . '-' . $id;
        @mkdir(__DIR__ . '/paused');
        @touch($marker);
        usleep((int) round($pause * 1000000));
        @unlink($marker);
    }
    return array('result' => 'success', 'billableid' => (int) $id);
}

/** WHMCS's internal API: the same arrays as the external one. */
function localAPI($command, $values = array(), $adminUser = '')
{
    $values = is_array($values) ? $values : array();
    switch (strtolower((string) $command)) {
        case 'getclientsdetails':
            return csw_sandbox_get_clients_details($values);
        case 'addbillableitem':
            return csw_sandbox_add_billable_item($values);
        default:
            return array('result' => 'error',
                'message' => 'Invalid API Action: "' . strtolower((string) $command) . '" is not a valid API action');
    }
}

/** WHMCS's module debug log: arrays are print_r'd, every replaceVars string is masked. */
function logModuleCall($module, $action, $request, $response, $processedData = '', $replaceVars = array())
{
    $mask = function ($value) use ($replaceVars) {
        $text = is_array($value) || is_object($value) ? print_r($value, true) : (string) $value;
        foreach ((array) $replaceVars as $secret) {
            $secret = (string) $secret;
            if ($secret !== '') {
                $text = str_replace($secret, str_repeat('*', strlen($secret)), $text);
            }
        }
        return $text;
    };
    CswCapsuleManager::table('tblmodulelog')->insert(array(
        'date' => date('Y-m-d H:i:s'),
        'module' => (string) $module,
        'action' => (string) $action,
        'request' => $mask($request),
        'response' => $mask($response),
        'arrdata' => $mask($processedData),
    ));
}

/** WHMCS's activity log (Utilities > Logs > Activity Log). */
function logActivity($message, $userId = 0)
{
    CswCapsuleManager::table('tblactivitylog')->insert(array(
        'date' => date('Y-m-d H:i:s'),
        'description' => (string) $message,
        'user' => 'System',
    ));
}
