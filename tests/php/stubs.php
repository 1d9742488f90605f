<?php
/**
 * Stand-ins for the WHMCS globals the ComputeStacks module touches, for tests/php/driver.php.
 *
 * Everything the module hands to WHMCS is recorded in $GLOBALS['CSW_STUB'] so the driver can print it:
 * module log entries (with the masking WHMCS would apply), localAPI calls, activity log lines, hooks,
 * and service properties saved through the fake model.
 */

namespace {

    if (!defined('WHMCS')) {
        define('WHMCS', true);
    }

    $GLOBALS['CSW_STUB'] = array(
        'module_log' => array(),
        'localapi_calls' => array(),
        'localapi_script' => array(),   // action => array response | callable(array $values): array
        'localapi_proxy' => null,       // null | ['url' => ..., 'identifier' => ..., 'secret' => ...]
        'activity' => array(),
        'hooks' => array(),
        'saved_properties' => array(),
        'capsule_tables' => array(),    // table => list of row arrays (see csw_stub_enable_capsule)
        'module_servers' => array(),    // service id => build params (see csw_stub_enable_module_server)
    );

    /** What WHMCS does with $replaceVars before storing a module log entry: mask each literal value. */
    function csw_stub_mask($value, array $replaceVars)
    {
        if (is_array($value) || is_object($value)) {
            $value = print_r($value, true);
        }
        $value = (string) $value;
        foreach ($replaceVars as $secret) {
            if (is_scalar($secret) && (string) $secret !== '') {
                $value = str_replace((string) $secret, '********', $value);
            }
        }
        return $value;
    }

    function logModuleCall($module, $action, $requestString, $responseData, $processedData = '', $replaceVars = array())
    {
        $replaceVars = is_array($replaceVars) ? array_values($replaceVars) : array();
        $GLOBALS['CSW_STUB']['module_log'][] = array(
            'module' => $module,
            'action' => $action,
            // raw, as the module handed it over (never printed: the driver only audits it)
            'raw' => array(
                'request' => is_string($requestString) ? $requestString : print_r($requestString, true),
                'response' => is_string($responseData) ? $responseData : print_r($responseData, true),
                'processed' => is_string($processedData) ? $processedData : print_r($processedData, true),
            ),
            // what WHMCS would store
            'stored' => array(
                'request' => csw_stub_mask($requestString, $replaceVars),
                'response' => csw_stub_mask($responseData, $replaceVars),
                'processed' => csw_stub_mask($processedData, $replaceVars),
            ),
            'replace_vars' => $replaceVars,
        );
    }

    function logActivity($message, $userId = 0)
    {
        $GLOBALS['CSW_STUB']['activity'][] = array('message' => (string) $message, 'userid' => (int) $userId);
    }

    function add_hook($hookPoint, $priority, $function)
    {
        $GLOBALS['CSW_STUB']['hooks'][] = array('point' => $hookPoint, 'priority' => $priority, 'function' => $function);
    }

    /**
     * Scripted responses, or (when a proxy is set) the real WHMCS API of the sandbox: localAPI takes
     * the same actions and returns the same arrays as the external API.
     */
    function localAPI($action, $values = array(), $adminUser = null)
    {
        $values = is_array($values) ? $values : array();
        $GLOBALS['CSW_STUB']['localapi_calls'][] = array('action' => $action, 'values' => $values);
        $script = $GLOBALS['CSW_STUB']['localapi_script'];
        if (isset($script[$action])) {
            $answer = $script[$action];
            return is_callable($answer) ? $answer($values) : $answer;
        }
        $proxy = $GLOBALS['CSW_STUB']['localapi_proxy'];
        if (is_array($proxy)) {
            $form = array_merge($values, array(
                'action' => $action,
                'identifier' => $proxy['identifier'],
                'secret' => $proxy['secret'],
                'responsetype' => 'json',
            ));
            $ch = curl_init($proxy['url']);
            curl_setopt_array($ch, array(
                CURLOPT_POST => true,
                CURLOPT_POSTFIELDS => http_build_query($form),
                CURLOPT_RETURNTRANSFER => true,
                CURLOPT_TIMEOUT => 10,
            ));
            $raw = curl_exec($ch);
            curl_close($ch);
            $decoded = is_string($raw) ? json_decode($raw, true) : null;
            return is_array($decoded) ? $decoded : array('result' => 'error', 'message' => 'sandbox unreachable');
        }
        return array('result' => 'error', 'message' => 'localAPI stub has no answer for ' . $action);
    }

    /** The part of WHMCS\Service\Service the module uses: ->serviceProperties->save(). */
    class CswStubServiceProperties
    {
        /** @var array */
        public $saved = array();

        public function save(array $values)
        {
            $this->saved = array_merge($this->saved, $values);
            $GLOBALS['CSW_STUB']['saved_properties'][] = $values;
        }

        public function get($name)
        {
            return isset($this->saved[$name]) ? $this->saved[$name] : null;
        }
    }

    class CswStubServiceModel
    {
        /** @var CswStubServiceProperties */
        public $serviceProperties;
        /** @var int */
        public $id;

        public function __construct($id)
        {
            $this->id = (int) $id;
            $this->serviceProperties = new CswStubServiceProperties();
        }
    }

    /** A minimal query builder over scripted rows: table()->where(col, value)->first(cols). */
    class CswStubQuery
    {
        private $rows;

        public function __construct(array $rows)
        {
            $this->rows = $rows;
        }

        public function where($column, $value)
        {
            $rows = array();
            foreach ($this->rows as $row) {
                if (isset($row[$column]) && (string) $row[$column] === (string) $value) {
                    $rows[] = $row;
                }
            }
            return new CswStubQuery($rows);
        }

        public function first($columns = array('*'))
        {
            return $this->rows ? (object) $this->rows[0] : null;
        }

        public function get($columns = array('*'))
        {
            return array_map(function ($row) {
                return (object) $row;
            }, $this->rows);
        }
    }

    class CswStubCapsule
    {
        public static function table($name)
        {
            $tables = $GLOBALS['CSW_STUB']['capsule_tables'];
            return new CswStubQuery(isset($tables[$name]) ? $tables[$name] : array());
        }
    }

    /** WHMCS\Module\Server: loadByServiceID() + buildParams(), from scripted server params. */
    class CswStubModuleServer
    {
        private $serviceId = 0;

        public function loadByServiceID($serviceId)
        {
            $this->serviceId = (int) $serviceId;
            return isset($GLOBALS['CSW_STUB']['module_servers'][$this->serviceId]);
        }

        public function buildParams()
        {
            $servers = $GLOBALS['CSW_STUB']['module_servers'];
            return isset($servers[$this->serviceId]) ? $servers[$this->serviceId] : array();
        }
    }

    /** Makes WHMCS\Database\Capsule exist, backed by $tables (table => rows). */
    function csw_stub_enable_capsule(array $tables)
    {
        $GLOBALS['CSW_STUB']['capsule_tables'] = $tables;
        if (!class_exists('WHMCS\Database\Capsule', false)) {
            class_alias('CswStubCapsule', 'WHMCS\Database\Capsule');
        }
    }

    /** Makes WHMCS\Module\Server exist, answering buildParams() from $byService (service id => params). */
    function csw_stub_enable_module_server(array $byService)
    {
        $GLOBALS['CSW_STUB']['module_servers'] = array();
        foreach ($byService as $serviceId => $params) {
            $GLOBALS['CSW_STUB']['module_servers'][(int) $serviceId] = $params;
        }
        if (!class_exists('WHMCS\Module\Server', false)) {
            class_alias('CswStubModuleServer', 'WHMCS\Module\Server');
        }
    }
}

namespace WHMCS\Service {

    /** The real class holds the status names as string constants. */
    class Status
    {
        const PENDING = 'Pending';
        const ACTIVE = 'Active';
        const SUSPENDED = 'Suspended';
        const TERMINATED = 'Terminated';
        const CANCELLED = 'Cancelled';
        const FRAUD = 'Fraud';
        const COMPLETED = 'Completed';
    }
}
