<?php
/**
 * The billing receiver's logic (entry point: ../billing.php). Contract: shared API.md section 8.
 *
 * A ref creates at most one billable item, ever. The item (through localAPI('AddBillableItem')) and the ref's row
 * in mod_computestacks_billing_refs are written in ONE transaction on WHMCS's database connection, the ref row
 * first: its primary key makes a concurrent insert of the same ref wait for the first transaction and then fail
 * with a duplicate-key error, so concurrency is settled by the database, never by check-then-insert alone. A crash
 * anywhere before the commit rolls back both; after it, a resend finds the ref and answers `existing`.
 *
 * Plain PHP 7.4, no Composer; WHMCS\Database\Capsule and localAPI come from WHMCS's init.php.
 */

namespace CSWhmcs;

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

use WHMCS\Database\Capsule;

/** AddBillableItem answered an error inside the transaction: roll back, answer `refused` / `rejected`. */
class ReceiverRejected extends \Exception
{
}

/** An answer to send now: HTTP status + JSON body. */
class ReceiverAnswer extends \Exception
{
    /** @var int */
    public $status;
    /** @var array */
    public $body;

    public function __construct($status, array $body)
    {
        parent::__construct(isset($body['message']) ? (string) $body['message'] : '');
        $this->status = (int) $status;
        $this->body = $body;
    }

    public static function error($status, $message)
    {
        return new self($status, array('result' => 'error', 'message' => $message));
    }
}

class BillingReceiver
{
    const MODULE = 'computestacks';
    const ROUTE = '/whmcs/billable-items';
    const TABLE = 'mod_computestacks_billing_refs';
    const PROTOCOL = '1';
    const WINDOW_SECONDS = 300;
    const MAX_BODY_BYTES = 524288;
    const MAX_ITEMS = 100;
    const MAX_SIGNATURES = 10;
    const LOCK_RETRIES = 3;
    const REF_PATTERN = '/^[A-Za-z0-9:._-]{1,64}$/D';
    const UNAVAILABLE = 'The WHMCS database could not be used just now; send the same items again.';

    /** @var string[] every secret and signature seen by this request, masked in the module log */
    private $secretsToMask = array();

    /** Handles the current HTTP request and writes the answer. */
    public static function main()
    {
        @ignore_user_abort(true);  // a client that hangs up must not stop us between two items
        $receiver = new self();
        try {
            $answer = $receiver->handle();
        } catch (ReceiverAnswer $a) {
            $answer = $a;
        } catch (\Throwable $e) {
            $receiver->logModule('unexpected ' . get_class($e), $e->getMessage());
            $answer = ReceiverAnswer::error(503, self::UNAVAILABLE);
        }
        self::respond($answer->status, $answer->body);
    }

    /** @return ReceiverAnswer */
    private function handle()
    {
        $method = isset($_SERVER['REQUEST_METHOD']) ? strtoupper((string) $_SERVER['REQUEST_METHOD']) : '';
        if ($method !== 'POST') {
            if (!headers_sent()) {
                header('Allow: POST');
            }
            return ReceiverAnswer::error(405, 'Only POST is accepted here.');
        }
        $raw = self::readBody();
        $this->verifySignature(
            self::header('HTTP_X_CSW_TIMESTAMP'),
            self::header('HTTP_X_CSW_SIGNATURE'),
            $raw,
            time()
        );
        try {
            $items = self::parseBody($raw);
        } catch (ReceiverAnswer $bad) {
            $this->logModule('POST ' . self::ROUTE . ': ' . strlen($raw) . ' bytes',
                $bad->status . ': ' . $bad->getMessage());
            throw $bad;
        }
        $refs = array();
        foreach ($items as $item) {
            $refs[] = $item['ref'];
        }
        $request = 'POST ' . self::ROUTE . ': ' . count($items) . ' item(s)'
            . ($refs ? '; refs: ' . implode(', ', $refs) : '');
        try {
            if ($items) {
                self::ensureTable();
            }
            $answers = array();
            foreach ($items as $item) {
                $answers[] = $this->processItem($item);
            }
        } catch (\Throwable $e) {
            $this->logModule($request, '503: ' . get_class($e) . ': ' . $e->getMessage());
            throw ReceiverAnswer::error(503, self::UNAVAILABLE);
        }
        $summary = array();
        foreach ($answers as $a) {
            $summary[] = $a['ref'] . ' ' . $a['status'] . ($a['billableid'] !== null ? ' #' . $a['billableid'] : '')
                . ($a['code'] !== '' ? ' (' . $a['code'] . ')' : '');
        }
        $this->logModule($request, '200: ' . ($summary ? implode('; ', $summary) : 'ping'));
        return new ReceiverAnswer(200, array('result' => 'success', 'receiver' => self::PROTOCOL, 'items' => $answers));
    }

    // ------------------------------------------------------------------ request

    private static function header($name)
    {
        return isset($_SERVER[$name]) ? (string) $_SERVER[$name] : null;
    }

    private static function readBody()
    {
        $declared = isset($_SERVER['CONTENT_LENGTH']) ? (int) $_SERVER['CONTENT_LENGTH'] : 0;
        if ($declared > self::MAX_BODY_BYTES) {
            throw ReceiverAnswer::error(400, 'The body is larger than 512 KiB.');
        }
        $raw = @file_get_contents('php://input', false, null, 0, self::MAX_BODY_BYTES + 1);
        if (!is_string($raw)) {
            $raw = '';
        }
        if (strlen($raw) > self::MAX_BODY_BYTES) {
            throw ReceiverAnswer::error(400, 'The body is larger than 512 KiB.');
        }
        return $raw;
    }

    // ------------------------------------------------------------------ signature

    /**
     * The Access Hashes of the enabled ComputeStacks server records, each split into its secrets (an operator
     * rotating the secret may enter several, comma-separated).
     *
     * @return string[]
     */
    private function secrets()
    {
        $rows = Capsule::table('tblservers')->where('type', self::MODULE)->where('disabled', 0)->pluck('accesshash');
        $secrets = array();
        foreach ($rows as $field) {
            $field = trim((string) $field);
            if ($field === '') {
                continue;
            }
            $this->secretsToMask[] = $field;
            foreach (preg_split('/[,\r\n]+/', $field) as $secret) {
                $secret = trim($secret);
                if ($secret !== '') {
                    $secrets[] = $secret;
                    $this->secretsToMask[] = $secret;
                }
            }
        }
        return array_values(array_unique($secrets));
    }

    /** Refuses (401, nothing written) unless one v1= signature verifies with one Access Hash secret. */
    private function verifySignature($timestamp, $signature, $raw, $now)
    {
        if ($timestamp === null || trim($timestamp) === '') {
            $this->refuse('the X-CSW-Timestamp header is missing');
        }
        if ($signature === null || trim($signature) === '') {
            $this->refuse('the X-CSW-Signature header is missing');
        }
        $this->secretsToMask[] = $signature;
        $timestamp = trim($timestamp);
        if (!preg_match('/^[0-9]{1,12}$/D', $timestamp)) {
            $this->refuse('the X-CSW-Timestamp header is malformed (expected Unix time in seconds)');
        }
        $given = array();
        $parts = explode(',', $signature);
        if (count($parts) > self::MAX_SIGNATURES) {
            $this->refuse('the X-CSW-Signature header carries more than ' . self::MAX_SIGNATURES . ' signatures');
        }
        foreach ($parts as $part) {
            $part = trim($part);
            if (!preg_match('/^v1=([0-9a-fA-F]{64})$/D', $part, $m)) {
                $this->refuse('the X-CSW-Signature header is malformed (expected v1=<64 hex digits>, comma-separated)');
            }
            $given[] = strtolower($m[1]);
            $this->secretsToMask[] = $m[1];
        }
        if (abs($now - (int) $timestamp) > self::WINDOW_SECONDS) {
            $this->refuse('the X-CSW-Timestamp is more than ' . self::WINDOW_SECONDS
                . ' s away from this server\'s clock');
        }
        $secrets = $this->secrets();
        if (!$secrets) {
            $this->refuse('no enabled ComputeStacks server record has an Access Hash to check the signature with');
        }
        $payload = $timestamp . '.' . self::ROUTE . '.' . $raw;
        $valid = false;
        foreach ($secrets as $secret) {
            $expected = hash_hmac('sha256', $payload, $secret);
            foreach ($given as $candidate) {
                if (hash_equals($expected, $candidate)) {
                    $valid = true;
                }
            }
        }
        if (!$valid) {
            $this->refuse('the signature does not match the Access Hash of any enabled ComputeStacks server record');
        }
    }

    private function refuse($reason)
    {
        $from = isset($_SERVER['REMOTE_ADDR']) ? (string) $_SERVER['REMOTE_ADDR'] : 'unknown address';
        try {
            if (function_exists('logActivity')) {
                logActivity('ComputeStacks billing receiver refused a request from ' . $from . ': ' . $reason);
            }
        } catch (\Throwable $e) {
            // the answer matters more than the log line
        }
        throw ReceiverAnswer::error(401, 'Refused: ' . $reason . '.');
    }

    // ------------------------------------------------------------------ body

    /**
     * The whole body, validated before anything is written.
     *
     * @return array[] items with normalized fields
     */
    private static function parseBody($raw)
    {
        $data = json_decode($raw, false, 64);
        if ($data === null && json_last_error() !== JSON_ERROR_NONE) {
            throw ReceiverAnswer::error(400, 'The body is not valid JSON.');
        }
        if (!($data instanceof \stdClass)) {
            throw ReceiverAnswer::error(400, 'The body must be a JSON object.');
        }
        if (!property_exists($data, 'items')) {
            throw ReceiverAnswer::error(400, 'The body has no "items" list.');
        }
        if (!is_array($data->items)) {
            throw ReceiverAnswer::error(400, '"items" must be a list.');
        }
        if (count($data->items) > self::MAX_ITEMS) {
            throw ReceiverAnswer::error(400, '"items" has ' . count($data->items) . ' entries; at most '
                . self::MAX_ITEMS . ' are allowed.');
        }
        $items = array();
        foreach (array_values($data->items) as $i => $item) {
            $items[] = self::validateItem($i, $item);
        }
        return $items;
    }

    private static function invalid($i, $field, $rule)
    {
        $where = 'items[' . $i . ']' . ($field !== '' ? '.' . $field : '');
        return ReceiverAnswer::error(400, $where . ' ' . $rule . '.');
    }

    private static function validateItem($i, $item)
    {
        if (!($item instanceof \stdClass)) {
            throw self::invalid($i, '', 'must be an object');
        }
        $required = array('ref', 'clientid', 'description', 'amount', 'currency', 'quantity', 'unit', 'invoiceaction');
        foreach ($required as $field) {
            if (!property_exists($item, $field) || $item->$field === null) {
                throw self::invalid($i, $field, 'is missing');
            }
        }
        if (!is_string($item->ref) || !preg_match(self::REF_PATTERN, $item->ref)) {
            throw self::invalid($i, 'ref', 'must be 1-64 characters of A-Z a-z 0-9 : . _ -');
        }
        if (!is_int($item->clientid) || $item->clientid <= 0 || $item->clientid > 4294967295) {
            throw self::invalid($i, 'clientid', 'must be a positive integer');
        }
        if (!is_string($item->description) || trim($item->description) === '') {
            throw self::invalid($i, 'description', 'must be a non-empty string');
        }
        if (strlen($item->description) > 65535) {
            throw self::invalid($i, 'description', 'must be at most 65535 bytes');
        }
        if (!is_string($item->amount) || !preg_match('/^-?[0-9]{1,14}\.[0-9]{2}$/D', $item->amount)) {
            throw self::invalid($i, 'amount', 'must be a decimal string with 2 places, e.g. "12.50"');
        }
        if (!is_string($item->currency) || !preg_match('/^[A-Za-z]{3}$/D', $item->currency)) {
            throw self::invalid($i, 'currency', 'must be a 3-letter currency code');
        }
        if (!is_string($item->quantity) || !preg_match('/^[0-9]{1,12}(\.[0-9]{1,10})?$/D', $item->quantity)) {
            throw self::invalid($i, 'quantity', 'must be a non-negative decimal string, e.g. "730" or "1.5"');
        }
        if (!is_string($item->unit) || !in_array($item->unit, array('quantity', 'hours'), true)) {
            throw self::invalid($i, 'unit', 'must be "quantity" or "hours"');
        }
        if (!is_string($item->invoiceaction) || !in_array($item->invoiceaction, array('duedate', 'nextcron'), true)) {
            throw self::invalid($i, 'invoiceaction', 'must be "duedate" or "nextcron"');
        }
        $dueDate = property_exists($item, 'duedate') ? $item->duedate : null;
        if ($dueDate === null || $dueDate === '') {
            // WHMCS needs a due date only for invoiceaction=duedate.
            if ($item->invoiceaction === 'duedate') {
                throw self::invalid($i, 'duedate', 'is missing');
            }
            $dueDate = null;
        } elseif (!is_string($dueDate) || !preg_match('/^([0-9]{4})-([0-9]{2})-([0-9]{2})$/D', $dueDate, $m)
            || !checkdate((int) $m[2], (int) $m[3], (int) $m[1])) {
            throw self::invalid($i, 'duedate', 'must be a valid date as YYYY-MM-DD');
        }
        return array(
            'ref' => $item->ref,
            'clientid' => $item->clientid,
            'description' => $item->description,
            'amount' => $item->amount,
            'currency' => strtoupper($item->currency),
            'quantity' => $item->quantity,
            'unit' => $item->unit,
            'invoiceaction' => $item->invoiceaction,
            'duedate' => $dueDate,
        );
    }

    // ------------------------------------------------------------------ the refs table

    /**
     * Creates the refs table on first use, atomically: the schema builder adds the primary key with a separate
     * ALTER TABLE on MySQL, so a table created in place would be visible (and written) WITHOUT its primary key for a
     * moment, and a concurrent request could insert the same ref twice. The table is therefore built complete
     * under a private name and renamed into place (atomic). Another request doing the same at the same moment
     * loses the rename and drops its copy.
     */
    private static function ensureTable()
    {
        $schema = Capsule::schema();
        if ($schema->hasTable(self::TABLE)) {
            return;
        }
        $staging = self::TABLE . '_new_' . bin2hex(random_bytes(4));
        try {
            $schema->create($staging, function ($table) {
                $table->engine = 'InnoDB';  // transactions; an old WHMCS database may default to MyISAM
                $table->string('ref', 64)->charset('ascii')->collation('ascii_bin');  // refs are case-sensitive
                $table->unsignedInteger('billableid')->nullable();
                $table->unsignedInteger('clientid');
                $table->decimal('amount', 16, 2);
                $table->string('currency', 3);
                $table->dateTime('created_at');
                $table->primary('ref');
            });
            $schema->rename($staging, self::TABLE);
        } catch (\Exception $e) {
            try {
                $schema->dropIfExists($staging);
            } catch (\Exception $ignored) {
                // a leftover staging table is harmless
            }
            if (!$schema->hasTable(self::TABLE)) {
                throw $e;
            }
        }
    }

    /** @return object|null the ref's row */
    private static function findRef($ref)
    {
        return Capsule::table(self::TABLE)->where('ref', $ref)->first();
    }

    // ------------------------------------------------------------------ items

    private static function answer($ref, $status, $billableId, $message, $code)
    {
        return array('ref' => $ref, 'status' => $status, 'billableid' => $billableId, 'message' => $message,
            'code' => $code);
    }

    private static function existing($ref, $row)
    {
        if ($row->billableid === null) {
            // Impossible while the item and its ref commit together; never invent an id.
            throw new \RuntimeException('the ref ' . $ref . ' has no billable item id');
        }
        $id = (int) $row->billableid;
        return self::answer($ref, 'existing', $id, 'Billable item ' . $id . ' was created for this ref before.', '');
    }

    private function processItem(array $item)
    {
        $ref = $item['ref'];
        $row = self::findRef($ref);
        if ($row !== null) {
            return self::existing($ref, $row);
        }
        $client = localAPI('GetClientsDetails', array('clientid' => $item['clientid'], 'stats' => false));
        if (!is_array($client) || !isset($client['result']) || $client['result'] !== 'success') {
            $message = is_array($client) && isset($client['message']) ? (string) $client['message'] : '';
            if (stripos($message, 'not found') === false) {
                throw new \RuntimeException('GetClientsDetails failed: ' . $message);
            }
            return self::answer($ref, 'refused', null, 'No WHMCS client has the id ' . $item['clientid'] . '.',
                'client_not_found');
        }
        $currency = '';
        if (isset($client['client']) && is_array($client['client']) && isset($client['client']['currency_code'])) {
            $currency = (string) $client['client']['currency_code'];
        } elseif (isset($client['currency_code'])) {
            $currency = (string) $client['currency_code'];
        }
        if (strcasecmp($currency, $item['currency']) !== 0) {
            $answer = self::answer($ref, 'refused', null, 'The client\'s WHMCS currency is ' . $currency
                . ', not ' . $item['currency'] . '.', 'currency_mismatch');
            $answer['currency'] = $currency;
            return $answer;
        }
        for ($attempt = 0; ; $attempt++) {
            try {
                $id = $this->createInTransaction($item);
                return self::answer($ref, 'created', $id, 'Billable item ' . $id . ' created.', '');
            } catch (ReceiverRejected $e) {
                return self::answer($ref, 'refused', null, 'WHMCS refused the item: ' . $e->getMessage(), 'rejected');
            } catch (\PDOException $e) {
                if (self::isDuplicateKey($e)) {
                    // Another request created this ref and committed while we waited: that one counts.
                    $row = self::findRef($ref);
                    if ($row !== null) {
                        return self::existing($ref, $row);
                    }
                    // It was rolled back after all: try again.
                } elseif (!self::isLockConflict($e)) {
                    throw $e;
                }
                if ($attempt >= self::LOCK_RETRIES) {
                    throw $e;
                }
                usleep(mt_rand(20000, 80000) * ($attempt + 1));
            }
        }
    }

    /** The ref row, then the billable item, then the ref's billableid: one transaction. */
    private function createInTransaction(array $item)
    {
        return Capsule::connection()->transaction(function () use ($item) {
            Capsule::table(self::TABLE)->insert(array(
                'ref' => $item['ref'],
                'billableid' => null,
                'clientid' => $item['clientid'],
                'amount' => $item['amount'],
                'currency' => $item['currency'],
                'created_at' => date('Y-m-d H:i:s'),
            ));
            $values = array(
                'clientid' => $item['clientid'],
                'description' => $item['description'],
                'amount' => $item['amount'],
                'invoiceaction' => $item['invoiceaction'],
            );
            if ($item['unit'] === 'quantity') {
                $values['unit'] = 'quantity';
                $values['quantity'] = $item['quantity'];
            } else {
                // `hours` is what WHMCS before 8.2 reads; 8.2+ reads unit + quantity.
                $values['hours'] = $item['quantity'];
                $values['unit'] = 'hours';
                $values['quantity'] = $item['quantity'];
            }
            if ($item['duedate'] !== null) {
                $values['duedate'] = $item['duedate'];
            }
            $result = localAPI('AddBillableItem', $values);
            // `result` is the envelope; some WHMCS documentation shows `status` instead.
            $ok = is_array($result) && ((isset($result['result']) && $result['result'] === 'success')
                || (!isset($result['result']) && isset($result['status']) && $result['status'] === 'success'));
            if (!$ok) {
                $message = is_array($result) && isset($result['message']) ? (string) $result['message'] : 'no answer';
                throw new ReceiverRejected($message);
            }
            $id = isset($result['billableid']) ? (int) $result['billableid'] : 0;
            if ($id <= 0) {
                throw new ReceiverRejected('AddBillableItem reported success without a billableid');
            }
            Capsule::table(self::TABLE)->where('ref', $item['ref'])->update(array('billableid' => $id));
            return $id;
        });
    }

    /** [SQLSTATE, driver code, message] of the PDO error behind $e. */
    private static function errorInfo(\Throwable $e)
    {
        for ($x = $e; $x !== null; $x = $x->getPrevious()) {
            if ($x instanceof \PDOException && is_array($x->errorInfo) && count($x->errorInfo) >= 2) {
                return array((string) $x->errorInfo[0], (int) $x->errorInfo[1],
                    isset($x->errorInfo[2]) ? (string) $x->errorInfo[2] : $x->getMessage());
            }
        }
        return array((string) $e->getCode(), 0, $e->getMessage());
    }

    private static function isDuplicateKey(\Throwable $e)
    {
        list($state, $code, $message) = self::errorInfo($e);
        if ($code === 1062) {  // MySQL/MariaDB ER_DUP_ENTRY
            return true;
        }
        return $state === '23000' && $code === 19 && stripos($message, 'UNIQUE') !== false;  // SQLite
    }

    private static function isLockConflict(\Throwable $e)
    {
        list($state, $code, $message) = self::errorInfo($e);
        if ($state === '40001' || $code === 1213 || $code === 1205) {  // deadlock, lock wait timeout
            return true;
        }
        return stripos($message, 'database is locked') !== false  // SQLite busy
            || stripos($message, 'database table is locked') !== false;
    }

    // ------------------------------------------------------------------ output and log

    private function logModule($request, $response)
    {
        if (!function_exists('logModuleCall')) {
            return;
        }
        $mask = array();
        foreach ($this->secretsToMask as $value) {
            if (is_string($value) && $value !== '') {
                $mask[] = $value;
            }
        }
        try {
            logModuleCall(self::MODULE, 'billing receiver', $request, $response, '', array_values(array_unique($mask)));
        } catch (\Throwable $e) {
            // the answer matters more than the log line
        }
    }

    /** Discards everything printed so far (notices, stray addon output) and writes the JSON answer alone. */
    public static function respond($status, array $body)
    {
        $json = json_encode($body, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE);
        if ($json === false) {
            $status = 503;
            $json = '{"result":"error","message":"The answer could not be encoded."}';
        }
        while (ob_get_level() > 0) {
            if (!@ob_end_clean()) {
                break;
            }
        }
        if (!headers_sent()) {
            http_response_code((int) $status);
            header('Content-Type: application/json');
            header('Cache-Control: no-store');
        }
        if (!defined('COMPUTESTACKS_BILLING_ANSWERED')) {
            define('COMPUTESTACKS_BILLING_ANSWERED', true);
        }
        echo $json;
        // Whatever runs after us (shutdown functions of other code) prints into nothing.
        ob_start(function () {
            return '';
        });
    }
}
