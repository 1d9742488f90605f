<?php
/**
 * Transport to the ComputeStacks integration backend (API Gateway + Lambda).
 *
 * Contract: shared API.md section 1 (signing), 2 (responses), 3 (routes), 7 (server record).
 * Plain PHP 7.4, curl only, no Composer.
 */

namespace CSWhmcs;

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

/*
 * Time limits of one backend call, in seconds (fractions allowed). The total covers the whole call,
 * the one retry included, so no module function waits on the backend longer than this: the backend
 * answers within 25 s (API.md section 2) and API Gateway gives up at 29 s, so 30 s lets even API
 * Gateway's own answer arrive. Define them earlier (e.g. in WHMCS's configuration.php) to lower them.
 */
if (!defined('COMPUTESTACKS_TIMEOUT')) {
    define('COMPUTESTACKS_TIMEOUT', 30);
}
if (!defined('COMPUTESTACKS_CONNECT_TIMEOUT')) {
    define('COMPUTESTACKS_CONNECT_TIMEOUT', 5);
}

/** A failed backend call; getMessage() is the sentence shown to the WHMCS admin. */
class BackendError extends \Exception
{
    /** @var int HTTP status, 0 when no HTTP answer arrived */
    public $httpStatus = 0;
    /** @var string the API's snake_case error code, when it gave one */
    public $apiCode = '';
}

class Client
{
    const MODULE = 'computestacks';
    /** Defaults and bounds of COMPUTESTACKS_TIMEOUT / COMPUTESTACKS_CONNECT_TIMEOUT, in seconds. */
    const CONNECT_TIMEOUT = 5;
    const TIMEOUT = 30;
    const MAX_TIMEOUT = 30;
    /** A retry is made only when at least this much of the budget is left, in seconds. */
    const MIN_RETRY_BUDGET = 1.0;
    /** A call is not even started with less than this left of a shared deadline, in seconds. */
    const MIN_SEND_BUDGET = 0.1;
    const USER_AGENT = 'ComputeStacks-WHMCS/2.0';

    /** Keys of $params that never leave WHMCS (API.md section 1). */
    const NEVER_SENT = array('serverusername', 'serverpassword', 'serveraccesshash', 'model');

    /** @var string e.g. https://abc.execute-api.eu-west-1.amazonaws.com/prod (no trailing slash) */
    private $baseUrl;
    /** @var string the first signing secret of the Access Hash */
    private $secret;
    /** @var string[] literal values WHMCS must mask in the module log */
    private $replaceVars;

    /** @var callable|null test seam: replaces usleep() between a failed connect and its retry */
    public static $sleeper = null;

    /**
     * @param string   $baseUrl
     * @param string   $secret
     * @param string[] $replaceVars extra literal values to mask in the module log
     */
    public function __construct($baseUrl, $secret, array $replaceVars = array())
    {
        $this->baseUrl = (string) $baseUrl;
        $this->secret = (string) $secret;
        $this->replaceVars = $replaceVars;
    }

    /**
     * Builds a client from a WHMCS server record, as found in module $params (API.md section 7).
     *
     * @param array $params module params, or any array with the server* keys
     * @return Client
     */
    public static function fromParams(array $params)
    {
        $secure = self::truthy(isset($params['serversecure']) ? $params['serversecure'] : false);
        $host = isset($params['serverhostname']) ? trim((string) $params['serverhostname']) : '';
        if ($host === '' && isset($params['serverip'])) {
            $host = trim((string) $params['serverip']);
        }
        // An admin may paste a full URL; Secure ("Use SSL") alone decides the scheme (API.md section 7).
        $host = preg_replace('#^[a-z][a-z0-9+.-]*://#i', '', $host);
        $host = rtrim($host, '/');
        $baseUrl = $host === '' ? '' : (($secure ? 'https://' : 'http://') . $host);

        $accessHash = isset($params['serveraccesshash']) ? (string) $params['serveraccesshash'] : '';
        $secret = self::firstSecret($accessHash);

        $mask = array($accessHash, $secret);
        foreach (array('serverpassword', 'password') as $key) {
            if (isset($params[$key]) && is_scalar($params[$key])) {
                $mask[] = (string) $params[$key];
            }
        }
        return new self($baseUrl, $secret, $mask);
    }

    /**
     * The first of several comma-separated secrets (the one being rotated in comes first).
     *
     * @param string $accessHash
     * @return string
     */
    public static function firstSecret($accessHash)
    {
        foreach (explode(',', (string) $accessHash) as $candidate) {
            $candidate = trim($candidate);
            if ($candidate !== '') {
                return $candidate;
            }
        }
        return '';
    }

    /**
     * WHMCS passes booleans, "on", "1" or "" depending on where the value came from.
     *
     * @param mixed $value
     * @return bool
     */
    public static function truthy($value)
    {
        if (is_bool($value)) {
            return $value;
        }
        if (is_int($value) || is_float($value)) {
            return $value != 0;
        }
        $value = strtolower(trim((string) $value));
        return in_array($value, array('1', 'on', 'yes', 'true', 'y'), true);
    }

    /**
     * The request body for a module function: $params minus what never leaves WHMCS.
     *
     * @param array $params
     * @param bool  $withPassword only create and change-password carry the service password
     * @return array
     */
    public static function moduleBody(array $params, $withPassword)
    {
        $body = array();
        foreach ($params as $key => $value) {
            if (in_array($key, self::NEVER_SENT, true)) {
                continue;
            }
            if ($key === 'password' && !$withPassword) {
                continue;
            }
            if (is_object($value) || is_resource($value)) {
                continue; // WHMCS models and the like: not data, and may not encode
            }
            $body[$key] = $value;
        }
        if (isset($body['clientsdetails']) && is_array($body['clientsdetails'])) {
            unset($body['clientsdetails']['password']);
        }
        return $body;
    }

    /**
     * The limits of one call in seconds, [total, connect], from COMPUTESTACKS_TIMEOUT and
     * COMPUTESTACKS_CONNECT_TIMEOUT: positive, at most MAX_TIMEOUT, connect never above total.
     *
     * @return float[]
     */
    public static function timeouts()
    {
        $total = self::seconds(\COMPUTESTACKS_TIMEOUT, self::TIMEOUT);
        $connect = min(self::seconds(\COMPUTESTACKS_CONNECT_TIMEOUT, self::CONNECT_TIMEOUT), $total);
        return array($total, $connect);
    }

    /**
     * @param mixed $value
     * @param int   $default
     * @return float
     */
    private static function seconds($value, $default)
    {
        $seconds = is_numeric($value) ? (float) $value : 0.0;
        if (!($seconds > 0.0) || is_nan($seconds)) {
            $seconds = (float) $default;
        }
        return min($seconds, (float) self::MAX_TIMEOUT);
    }

    /**
     * "30 s", "2.5 s".
     *
     * @param float $seconds
     * @return string
     */
    private static function showSeconds($seconds)
    {
        return rtrim(rtrim(sprintf('%.1f', max(0.0, (float) $seconds)), '0'), '.') . ' s';
    }

    /** @return string */
    public function baseUrl()
    {
        return $this->baseUrl;
    }

    /**
     * Literal values to mask in the module log, longest first, each also in its JSON-escaped form
     * (a password holding a quote or a backslash appears escaped in the logged body).
     *
     * @param string[] $extra
     * @return string[]
     */
    public function replaceVars(array $extra = array())
    {
        $out = array();
        foreach (array_merge($this->replaceVars, $extra) as $value) {
            if (!is_scalar($value)) {
                continue;
            }
            $value = (string) $value;
            if ($value === '') {
                continue;
            }
            $out[$value] = true;
            $encoded = json_encode($value, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
            if (is_string($encoded) && strlen($encoded) >= 2) {
                $out[substr($encoded, 1, -1)] = true;
            }
            $escapedSlashes = json_encode($value, JSON_UNESCAPED_UNICODE);
            if (is_string($escapedSlashes) && strlen($escapedSlashes) >= 2) {
                $out[substr($escapedSlashes, 1, -1)] = true;
            }
        }
        $values = array_map('strval', array_keys($out));
        usort($values, function ($a, $b) {
            return strlen($b) - strlen($a);
        });
        return $values;
    }

    /**
     * Signs and POSTs $payload to $route; returns the decoded success body.
     * Logs the call with logModuleCall whatever happens. Never waits past the call's time limit
     * (timeouts()), nor past $until when given.
     *
     * @param string     $action the WHMCS function name, for the module log
     * @param string     $route  exactly as in API.md section 3, e.g. /v1/accounts/suspend
     * @param array      $payload
     * @param float|null $until  an earlier deadline (microtime(true)) shared by several calls, e.g. a hook's
     * @return array
     * @throws BackendError
     */
    public function call($action, $route, array $payload, $until = null)
    {
        $started = microtime(true);
        $url = $this->baseUrl . $route;
        $body = self::encode($payload);
        $logRequest = 'POST ' . $url . "\n" . (is_string($body) ? $body : '');

        if ($this->baseUrl === '') {
            $error = new BackendError(
                'The ComputeStacks server has no Hostname: set it to the backend API host on the server record.'
            );
            $this->log($action, $logRequest, $error->getMessage(), array());
            throw $error;
        }
        if ($this->secret === '') {
            $error = new BackendError(
                'The ComputeStacks server has no Access Hash: set it to the backend signing secret on the server record.'
            );
            $this->log($action, $logRequest, $error->getMessage(), array());
            throw $error;
        }
        if (!is_string($body)) {
            $error = new BackendError('The request could not be encoded as JSON: ' . json_last_error_msg());
            $this->log($action, $logRequest, $error->getMessage(), array());
            throw $error;
        }

        list($total, $connect) = self::timeouts();
        $deadline = $started + $total;
        if ($until !== null && (float) $until < $deadline) {
            $deadline = (float) $until;
        }
        $budget = $deadline - $started;
        if ($budget < self::MIN_SEND_BUDGET) {
            $error = new BackendError(
                'The request to the ComputeStacks backend at ' . $this->baseUrl . ' was not sent: earlier backend '
                . 'calls of this page used up its ' . self::showSeconds($total) . ' time limit.'
            );
            $this->log($action, $logRequest, $error->getMessage(), array());
            throw $error;
        }

        $attempt = 0;
        while (true) {
            $attempt++;
            $left = $deadline - microtime(true);
            $result = $this->send($url, $route, $body, $left, min($connect, $left));
            // Nothing reached the backend: one retry, signed anew, only if it fits the same budget.
            if ($result['curl_errno'] !== 0 && $attempt === 1 && $result['connect_failed']
                && $deadline - microtime(true) - 0.25 >= self::MIN_RETRY_BUDGET) {
                $this->log($action, $logRequest, self::curlText($result) . ' (retrying once)', array());
                $sleeper = self::$sleeper;
                if (is_callable($sleeper)) {
                    $sleeper(250000);
                } else {
                    usleep(250000);
                }
                $body = self::encode($payload); // a new nonce: the retry is signed anew
                $logRequest = 'POST ' . $url . "\n" . $body;
                continue;
            }
            break;
        }

        if ($result['curl_errno'] !== 0) {
            $error = $this->transportError($result, $budget, min($connect, $budget), $attempt);
            $this->log($action, $logRequest, self::curlText($result) . ' (gave up after '
                . self::showSeconds(microtime(true) - $started) . ')', array());
            throw $error;
        }

        $status = $result['status'];
        $raw = $result['body'];
        $decoded = json_decode($raw, true);
        $extraMask = is_array($decoded) ? self::tokensIn($decoded) : array();
        $this->log($action, $logRequest, $raw, is_array($decoded) ? $decoded : array(), $extraMask);

        $message = '';
        if (is_array($decoded) && isset($decoded['message']) && is_scalar($decoded['message'])) {
            $message = trim((string) $decoded['message']);
        }
        $apiShaped = is_array($decoded) && isset($decoded['result']) && $decoded['result'] === 'error';
        if ($status === 401) {
            $error = new BackendError(
                "The backend refused the request signature: check the server's Access Hash (signing secret) and the clocks."
                . ($message !== '' ? ' ' . $message : '')
            );
        } elseif ($status >= 200 && $status < 300 && is_array($decoded)
            && isset($decoded['result']) && $decoded['result'] === 'success') {
            return $decoded;
        } elseif ($message !== '' && $apiShaped && $status === 504) {
            // The backend's own answer: an upstream (ComputeStacks or WHMCS, as its message says) was slow.
            $error = new BackendError(
                'The ComputeStacks backend at ' . $this->baseUrl . ' answered HTTP 504: ' . $message
            );
        } elseif ($message !== '' && !$apiShaped && $status >= 400) {
            // Not the API's error shape: API Gateway or a proxy in front of the backend answered.
            $error = new BackendError(
                'A gateway in front of the ComputeStacks backend at ' . $this->baseUrl . ' answered HTTP ' . $status
                . ' (not the backend\'s own answer): ' . self::sentence($message)
                . ($status === 504 ? ' The backend did not finish in time.' : '')
            );
        } elseif ($message !== '') {
            $error = new BackendError($message);
        } else {
            $error = new BackendError(
                'The ComputeStacks backend answered HTTP ' . $status . ' without a readable message.'
            );
        }
        $error->httpStatus = $status;
        if (is_array($decoded) && isset($decoded['code']) && is_scalar($decoded['code'])) {
            $error->apiCode = (string) $decoded['code'];
        }
        throw $error;
    }

    /**
     * The JSON body, with a fresh `csw_nonce`.
     *
     * Timestamps are whole seconds and the backend refuses a signature it has already accepted, so two
     * identical calls in the same second (a double click, a hook fired twice, Create run again) would
     * otherwise carry the same signature and the second would be refused as a replay. The backend
     * ignores unknown keys (API.md section 1).
     *
     * @param array $payload
     * @return string|false
     */
    private static function encode(array $payload)
    {
        $payload['csw_nonce'] = bin2hex(random_bytes(12));
        return json_encode(
            (object) $payload,
            JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE
        );
    }

    /**
     * @param string $text
     * @return string $text ending with a full stop (or its own ! or ?)
     */
    private static function sentence($text)
    {
        $text = trim((string) $text);
        return preg_match('/[.!?]$/', $text) ? $text : $text . '.';
    }

    /**
     * "curl error 28: Operation timed out ...", for the module log.
     *
     * @param array $result from send()
     * @return string
     */
    private static function curlText(array $result)
    {
        return 'curl error ' . $result['curl_errno'] . ': ' . $result['curl_error'];
    }

    /**
     * The admin's sentence for a call that got no complete HTTP answer: which side failed, and whether
     * the request can have been carried out.
     *
     * @param array $result   from send()
     * @param float $budget   the call's time limit, seconds
     * @param float $connect  the connect time limit, seconds
     * @param int   $attempts how many connections were tried
     * @return BackendError
     */
    private function transportError(array $result, $budget, $connect, $attempts)
    {
        $errno = $result['curl_errno'];
        $detail = trim((string) $result['curl_error']);
        $tried = $attempts > 1 ? ' (tried twice)' : '';
        $unreachable = function ($reason) use ($tried) {
            return new BackendError(
                'The ComputeStacks backend could not be reached at ' . $this->baseUrl . ': ' . $reason . $tried
                . '. Nothing was sent; check the server\'s Hostname and Secure settings, DNS and firewall.'
            );
        };
        if ($result['connect_failed']) {
            // Linux errno values (WHMCS runs on Linux); newer curl says only "Couldn't connect to server".
            $osErrors = array(111 => 'connection refused', 113 => 'no route to host', 101 => 'network is unreachable');
            if ($errno === 7 && isset($osErrors[$result['os_errno']])) {
                return $unreachable($osErrors[$result['os_errno']]);
            }
            if ($errno === 7 && stripos($detail, 'refused') !== false) {
                return $unreachable('connection refused');
            }
            if ($errno === 28) {
                return $unreachable('no connection within ' . self::showSeconds($connect) . ' (curl connect timeout)');
            }
            return $unreachable(rtrim($detail, '.') . ' (curl error ' . $errno . ')');
        }
        if ($errno === 6) {
            return $unreachable('its host name was not found (DNS, curl error 6)');
        }
        if (in_array($errno, array(35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91), true)) {
            return $unreachable('the TLS (SSL) connection failed: ' . rtrim($detail, '.') . ' (curl error ' . $errno . ')');
        }
        if ($errno === 28 && $result['pretransfer_time'] <= 0.0) {
            return $unreachable('no TLS connection within ' . self::showSeconds($budget) . ' (curl timeout)');
        }
        $maybe = ' The action may still be carried out: check before repeating it.';
        $notThem = ' The delay is between WHMCS and the backend (API Gateway, Lambda or the network to it); '
            . 'ComputeStacks and the WHMCS API were not necessarily involved.';
        if ($errno === 28) {
            $what = $result['status'] > 0
                ? 'finish its answer (HTTP ' . $result['status'] . ' started)'
                : 'answer';
            return new BackendError(
                'The ComputeStacks backend at ' . $this->baseUrl . ' did not ' . $what . ' within '
                . self::showSeconds($budget) . ' (curl timeout in the WHMCS module).' . $notThem . $maybe
            );
        }
        if (in_array($errno, array(18, 52, 55, 56), true)) {
            return new BackendError(
                'The ComputeStacks backend at ' . $this->baseUrl . ' closed the connection without a complete answer ('
                . rtrim($detail, '.') . ', curl error ' . $errno . ').' . $maybe
            );
        }
        return new BackendError(
            'The call to the ComputeStacks backend at ' . $this->baseUrl . ' failed: ' . rtrim($detail, '.')
            . ' (curl error ' . $errno . ').' . $maybe
        );
    }

    /**
     * One signed POST that gives up after $timeout seconds in all.
     *
     * @param string $url
     * @param string $route
     * @param string $body
     * @param float  $timeout        seconds for the whole exchange
     * @param float  $connectTimeout seconds for the TCP (and TLS) connection
     * @return array{status:int,body:string,curl_errno:int,curl_error:string,connect_failed:bool,pretransfer_time:float,os_errno:int}
     */
    private function send($url, $route, $body, $timeout, $connectTimeout)
    {
        $timestamp = (string) time();
        $signature = 'v1=' . hash_hmac('sha256', $timestamp . '.' . $route . '.' . $body, $this->secret);

        $ch = curl_init();
        curl_setopt_array($ch, array(
            CURLOPT_URL => $url,
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => $body,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_HEADER => false,
            CURLOPT_FOLLOWLOCATION => false,
            // Milliseconds, at least 1: curl reads 0 as "no limit".
            CURLOPT_CONNECTTIMEOUT_MS => max(1, (int) floor($connectTimeout * 1000)),
            CURLOPT_TIMEOUT_MS => max(1, (int) floor($timeout * 1000)),
            CURLOPT_SSL_VERIFYPEER => true,
            CURLOPT_SSL_VERIFYHOST => 2,
            CURLOPT_USERAGENT => self::USER_AGENT,
            CURLOPT_HTTPHEADER => array(
                'Content-Type: application/json; charset=utf-8',
                'Accept: application/json',
                'Expect:',
                'X-CSW-Timestamp: ' . $timestamp,
                'X-CSW-Signature: ' . $signature,
            ),
        ));
        $raw = curl_exec($ch);
        $errno = curl_errno($ch);
        $errorText = curl_error($ch);
        $status = (int) curl_getinfo($ch, CURLINFO_HTTP_CODE);
        $connectTime = (float) curl_getinfo($ch, CURLINFO_CONNECT_TIME);
        $pretransferTime = (float) curl_getinfo($ch, CURLINFO_PRETRANSFER_TIME);
        $osErrno = (int) curl_getinfo($ch, CURLINFO_OS_ERRNO);
        curl_close($ch);

        // Retry only when the request cannot have reached the backend: refused connection, or a
        // timeout before the TCP connection was made (curl reports both timeouts as errno 28).
        $connectFailed = $errno === 7 /* CURLE_COULDNT_CONNECT */
            || ($errno === 28 /* CURLE_OPERATION_TIMEDOUT */ && $connectTime <= 0.0);

        return array(
            'status' => $status,
            'body' => is_string($raw) ? $raw : '',
            'curl_errno' => $errno,
            'curl_error' => $errorText,
            'connect_failed' => $connectFailed,
            // 0 when the request was never about to be sent (e.g. the TLS handshake did not finish)
            'pretransfer_time' => $pretransferTime,
            'os_errno' => $osErrno,
        );
    }

    /**
     * SSO tokens and redirect URLs in a response, to be masked in the module log.
     *
     * @param array $decoded
     * @return string[]
     */
    public static function tokensIn(array $decoded)
    {
        $found = array();
        foreach ($decoded as $key => $value) {
            if (is_array($value)) {
                $found = array_merge($found, self::tokensIn($value));
                continue;
            }
            if (!is_string($value) || $value === '') {
                continue;
            }
            $lower = strtolower((string) $key);
            if (strpos($lower, 'token') !== false) {
                $found[] = $value;
                $found[] = rawurlencode($value);
                $found[] = urlencode($value);
            }
            if ($lower === 'redirect_url' || $lower === 'redirectto' || $lower === 'url') {
                $query = (string) parse_url($value, PHP_URL_QUERY);
                if ($query === '') {
                    continue;
                }
                $found[] = $value;
                foreach (explode('&', $query) as $pair) {
                    $parts = explode('=', $pair, 2);
                    if (count($parts) === 2 && stripos(rawurldecode($parts[0]), 'token') !== false
                        && $parts[1] !== '') {
                        $found[] = $parts[1];
                        $found[] = rawurldecode($parts[1]);
                        $found[] = urldecode($parts[1]);
                    }
                }
            }
        }
        return array_values(array_unique($found));
    }

    /**
     * @param string       $action
     * @param string|array $request
     * @param string|array $response
     * @param array        $processed
     * @param string[]     $extraMask
     */
    private function log($action, $request, $response, array $processed, array $extraMask = array())
    {
        if (!function_exists('logModuleCall')) {
            return;
        }
        try {
            logModuleCall(self::MODULE, $action, $request, $response, $processed, $this->replaceVars($extraMask));
        } catch (\Throwable $ignored) {
            // Logging must never break provisioning.
        }
    }
}
