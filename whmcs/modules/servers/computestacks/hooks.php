<?php
/**
 * ComputeStacks module hooks.
 *
 * OrderPaid: tells the backend which lines of the paid order are ComputeStacks services and whether
 * their product has "Apply Credit" ticked (configoption2), so the backend can turn the deposit into
 * account credit (API.md section 3, /v1/hooks/order-paid). The backend checks the invoice itself and
 * credits an order at most once, so a repeated hook is harmless.
 *
 * Assumptions (WHMCS internals the public API does not expose):
 * - Product module and Module Settings are read from tblproducts (servertype, configoption2) through
 *   WHMCS\Database\Capsule; without Capsule the module comes from localAPI GetProducts and Apply
 *   Credit counts as ticked (its default).
 * - The server record (hostname, secure, access hash) comes from WHMCS\Module\Server::buildParams(),
 *   which returns the same decrypted server* keys the module functions get; failing that, from
 *   tblservers, whose accesshash column WHMCS stores as entered (only the password column is
 *   encrypted), so it is used as is.
 * InvoicePaid: when the paying client has a ComputeStacks service that WHMCS shows Suspended, forwards the
 * hook's `invoiceid` to that service's backend (API.md section 9, /v1/hooks/invoice-paid), which lifts the
 * suspensions it made for overdue usage once nothing else is overdue. A client with no suspended
 * ComputeStacks service costs no backend call: InvoicePaid fires for every paid invoice, inside the
 * payment's own request. The client comes from localAPI GetInvoice, the services from GetClientsProducts.
 *
 * Nothing here ever throws into WHMCS: failures go to the Activity Log and the Module Log.
 * The hook runs inside the customer's checkout: its backend calls share one time limit
 * (COMPUTESTACKS_TIMEOUT, 30 s), so a slow backend never holds the checkout longer than that.
 */

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

require_once __DIR__ . '/lib/Client.php';

if (!function_exists('computestacks_handle_order_paid')) {
    /**
     * WHMCS's activity log, where there is one (the hooks' real log_activity).
     *
     * @param string $message
     * @param int $clientId
     */
    function computestacks_hook_whmcs_log_activity($message, $clientId)
    {
        if (function_exists('logActivity')) {
            logActivity($message, $clientId);
        }
    }

    /**
     * The real WHMCS lookups; the test driver replaces any of them.
     *
     * @return array<string, callable>
     */
    function computestacks_order_paid_default_deps()
    {
        return computestacks_hook_default_deps('OrderPaid', '/v1/hooks/order-paid', array(
            'order_services' => 'computestacks_order_paid_services',
        ));
    }

    /**
     * The real WHMCS lookups every hook has, and its backend call; the test driver replaces any of them.
     *
     * @param string $action the backend call's name (the hook's)
     * @param string $path the backend route it posts to
     * @param array<string, callable> $lookups the hook's own lookups
     * @return array<string, callable>
     */
    function computestacks_hook_default_deps($action, $path, array $lookups)
    {
        return array_merge($lookups, array(
            'product' => 'computestacks_order_paid_product',
            'server_params' => 'computestacks_order_paid_server_params',
            'send' => function (array $serverParams, array $payload, $until = null) use ($action, $path) {
                return \CSWhmcs\Client::fromParams($serverParams)->call($action, $path, $payload, $until);
            },
            'log_activity' => 'computestacks_hook_whmcs_log_activity',
        ));
    }

    /**
     * A localAPI call that has to succeed.
     *
     * @param string $command
     * @param array $values
     * @return array WHMCS's answer (result=success)
     * @throws \RuntimeException "<command> failed: <message>" when WHMCS answers with an error
     */
    function computestacks_hook_local_api($command, array $values)
    {
        $result = localAPI($command, $values);
        if (!is_array($result) || !isset($result['result']) || $result['result'] !== 'success') {
            $message = is_array($result) && isset($result['message']) ? (string) $result['message'] : 'no answer';
            throw new \RuntimeException($command . ' failed: ' . $message);
        }
        return $result;
    }

    /**
     * When a hook's backend calls must be done: they run inside the customer's request, so however many
     * backends there are, together they never wait longer than one call may (COMPUTESTACKS_TIMEOUT).
     *
     * @return float a microtime(true) deadline
     */
    function computestacks_hook_until()
    {
        $timeouts = \CSWhmcs\Client::timeouts();
        return microtime(true) + $timeouts[0];
    }

    /**
     * A hook callback for add_hook that never throws into WHMCS: a failure goes to the activity log.
     *
     * @param string $hook the hook's name, for the log line
     * @param callable $handler called with the hook variables (an array)
     * @return \Closure
     */
    function computestacks_hook_guarded($hook, $handler)
    {
        return function ($vars) use ($hook, $handler) {
            try {
                call_user_func($handler, is_array($vars) ? $vars : array());
            } catch (\Throwable $e) {
                if (function_exists('logActivity')) {
                    logActivity('ComputeStacks: ' . $hook . ' hook failed: ' . $e->getMessage());
                }
            }
        };
    }

    /**
     * The order's services, from GetClientsProducts of the paying client, all pages.
     *
     * @param int $orderId
     * @param int $clientId
     * @return array[] each ['serviceid' => int, 'pid' => int, 'serverid' => int]
     * @throws \RuntimeException when WHMCS answers with an error
     */
    function computestacks_order_paid_services($orderId, $clientId)
    {
        $services = array();
        foreach (computestacks_client_services($clientId) as $service) {
            if ($service['orderid'] === (int) $orderId) {
                $services[] = array(
                    'serviceid' => $service['serviceid'],
                    'pid' => $service['pid'],
                    'serverid' => $service['serverid'],
                );
            }
        }
        return $services;
    }

    /**
     * Every service of a client, from GetClientsProducts, all pages.
     *
     * @param int $clientId
     * @return array[] each ['serviceid' => int, 'pid' => int, 'serverid' => int, 'orderid' => int, 'status' => string]
     * @throws \RuntimeException when WHMCS answers with an error
     */
    function computestacks_client_services($clientId)
    {
        $services = array();
        $start = 0;
        $pageSize = 100;
        for ($page = 0; $page < 1000; $page++) {
            $result = computestacks_hook_local_api('GetClientsProducts', array(
                'clientid' => $clientId,
                'limitstart' => $start,
                'limitnum' => $pageSize,
            ));
            $products = array();
            if (isset($result['products']['product']) && is_array($result['products']['product'])) {
                $products = $result['products']['product'];
            }
            foreach ($products as $product) {
                if (!is_array($product)) {
                    continue;
                }
                $services[] = array(
                    'serviceid' => (int) (isset($product['id']) ? $product['id'] : 0),
                    'pid' => (int) (isset($product['pid']) ? $product['pid'] : 0),
                    'serverid' => (int) (isset($product['serverid']) ? $product['serverid'] : 0),
                    'orderid' => (int) (isset($product['orderid']) ? $product['orderid'] : 0),
                    'status' => isset($product['status']) && is_scalar($product['status'])
                        ? (string) $product['status'] : '',
                );
            }
            $returned = isset($result['numreturned']) ? (int) $result['numreturned'] : count($products);
            $total = isset($result['totalresults']) ? (int) $result['totalresults'] : 0;
            $start += $returned;
            if ($returned <= 0 || $start >= $total) {
                break;
            }
        }
        return $services;
    }

    /**
     * A product's module and Apply Credit setting.
     *
     * @param int $pid
     * @return array|null ['module' => string, 'apply_credit' => bool], null when unknown
     */
    function computestacks_order_paid_product($pid)
    {
        if (class_exists('WHMCS\Database\Capsule')) {
            $row = \WHMCS\Database\Capsule::table('tblproducts')
                ->where('id', (int) $pid)
                ->first(array('servertype', 'configoption2'));
            if (!$row) {
                return null;
            }
            return array(
                'module' => (string) $row->servertype,
                'apply_credit' => \CSWhmcs\Client::truthy($row->configoption2),
            );
        }
        $result = localAPI('GetProducts', array('pid' => (int) $pid));
        if (!is_array($result) || !isset($result['products']['product']) || !is_array($result['products']['product'])) {
            return null;
        }
        foreach ($result['products']['product'] as $product) {
            if (is_array($product) && isset($product['pid']) && (int) $product['pid'] === (int) $pid) {
                // GetProducts does not expose Module Settings: Apply Credit takes its default (ticked).
                return array('module' => (string) (isset($product['module']) ? $product['module'] : ''), 'apply_credit' => true);
            }
        }
        return null;
    }

    /**
     * The server record of a service, as server* keys.
     *
     * @param int $serviceId
     * @param int $serverId
     * @return array|null
     */
    function computestacks_order_paid_server_params($serviceId, $serverId)
    {
        if (class_exists('WHMCS\Module\Server')) {
            try {
                $server = new \WHMCS\Module\Server();
                $server->loadByServiceID((int) $serviceId);
                $params = $server->buildParams();
                if (is_array($params) && (!empty($params['serverhostname']) || !empty($params['serverip']))) {
                    return $params;
                }
            } catch (\Throwable $e) {
                // fall through to the table
            }
        }
        if ($serverId > 0 && class_exists('WHMCS\Database\Capsule')) {
            $row = \WHMCS\Database\Capsule::table('tblservers')
                ->where('id', (int) $serverId)
                ->first(array('hostname', 'ipaddress', 'secure', 'accesshash'));
            if ($row) {
                return array(
                    'serverhostname' => (string) $row->hostname,
                    'serverip' => (string) $row->ipaddress,
                    'serversecure' => \CSWhmcs\Client::truthy($row->secure),
                    'serveraccesshash' => (string) $row->accesshash,
                );
            }
        }
        return null;
    }

    /**
     * Which backend a server record points at: its address and (a hash of) its signing secret.
     *
     * @param array $server server* params
     * @return string
     */
    function computestacks_backend_key(array $server)
    {
        return \CSWhmcs\Client::fromParams($server)->baseUrl() . '|'
            . hash('sha256', \CSWhmcs\Client::firstSecret(
                isset($server['serveraccesshash']) ? (string) $server['serveraccesshash'] : ''
            ));
    }

    /**
     * The ComputeStacks server of one WHMCS service of a hook, reading each product once.
     *
     * @param array $service a service row: serviceid, pid, serverid
     * @param array $products the product rows read so far, by product id (filled in as it goes)
     * @param array $deps the hook's lookups: product, server_params
     * @param callable $fail told why, when the service cannot be read or has no server
     * @return array|null [server params, product row]; null when the service is not ComputeStacks' or failed
     */
    function computestacks_hook_service_server(array $service, array &$products, array $deps, $fail)
    {
        $serviceId = (int) $service['serviceid'];
        $pid = (int) $service['pid'];
        try {
            if (!array_key_exists($pid, $products)) {
                $products[$pid] = call_user_func($deps['product'], $pid);
            }
            $product = $products[$pid];
            if (!is_array($product) || strtolower((string) $product['module']) !== 'computestacks') {
                return null;
            }
            $server = call_user_func($deps['server_params'], $serviceId, (int) $service['serverid']);
        } catch (\Throwable $e) {
            call_user_func($fail, 'could not read service #' . $serviceId . ': ' . $e->getMessage());
            return null;
        }
        if (!is_array($server)) {
            call_user_func($fail, 'service #' . $serviceId . ' has no ComputeStacks server assigned.');
            return null;
        }
        return array($server, $product);
    }

    /**
     * Records a hook's message in the WHMCS activity log; a failing log never stops the hook.
     *
     * @param array $deps the hook's lookups: log_activity
     * @param string $text
     * @param int $clientId
     */
    function computestacks_hook_log_activity(array $deps, $text, $clientId)
    {
        try {
            call_user_func($deps['log_activity'], $text, $clientId);
        } catch (\Throwable $ignored) {
        }
    }

    /**
     * Records a hook's failure in the activity log and the module log; a failing log never stops the hook.
     *
     * @param array $deps the hook's lookups: log_activity
     * @param string $text the activity log line
     * @param int $clientId
     * @param string $action the module log action (the hook's name)
     * @param array $request the module log request
     * @param string $message the failure
     */
    function computestacks_hook_log_failure(array $deps, $text, $clientId, $action, array $request, $message)
    {
        computestacks_hook_log_activity($deps, $text, $clientId);
        if (function_exists('logModuleCall')) {
            try {
                logModuleCall('computestacks', $action, $request, $message, array(), array());
            } catch (\Throwable $ignored) {
            }
        }
    }

    /**
     * A hook's ComputeStacks services grouped by the backend they are on, for one request per backend.
     *
     * @param array $services service rows: serviceid, pid, serverid
     * @param array $deps the hook's lookups: product, server_params
     * @param callable $fail told why, when a service cannot be read or has no server
     * @param callable $item what a service adds to its backend's request, from (service id, product row)
     * @return array[] by backend key, in the services' order: ['server' => server params, 'items' => [...]]
     */
    function computestacks_hook_group_by_backend(array $services, array $deps, $fail, $item)
    {
        $products = array();
        $groups = array();
        foreach ($services as $service) {
            $found = computestacks_hook_service_server($service, $products, $deps, $fail);
            if ($found === null) {
                continue;
            }
            list($server, $product) = $found;
            $key = computestacks_backend_key($server);
            if (!isset($groups[$key])) {
                $groups[$key] = array('server' => $server, 'items' => array());
            }
            $groups[$key]['items'][] = call_user_func($item, (int) $service['serviceid'], $product);
        }
        return $groups;
    }

    /**
     * Builds the order's ComputeStacks lines and posts them to the backend of their server.
     *
     * @param array $vars the OrderPaid hook variables: orderId, invoiceId, userId
     * @param array $deps replacements for computestacks_order_paid_default_deps()
     * @return array what happened, for tests and logs: ['posted' => [...], 'errors' => [...]]
     */
    function computestacks_handle_order_paid(array $vars, array $deps = array())
    {
        // One time budget for the whole hook: it runs inside the customer's checkout.
        $until = computestacks_hook_until();
        $deps = array_merge(computestacks_order_paid_default_deps(), $deps);
        $orderId = isset($vars['orderId']) ? (int) $vars['orderId'] : 0;
        $invoiceId = isset($vars['invoiceId']) ? (int) $vars['invoiceId'] : 0;
        $clientId = isset($vars['userId']) ? (int) $vars['userId'] : 0;
        $summary = array('posted' => array(), 'errors' => array());
        $fail = function ($message) use (&$summary, $deps, $clientId, $orderId) {
            $summary['errors'][] = $message;
            $text = 'ComputeStacks: order #' . $orderId . ' deposit credit failed: ' . $message;
            computestacks_hook_log_failure($deps, $text, $clientId, 'OrderPaid', array('orderId' => $orderId), $message);
        };

        if ($orderId <= 0 || $clientId <= 0) {
            $fail('the hook gave no order or client id.');
            return $summary;
        }

        try {
            $services = call_user_func($deps['order_services'], $orderId, $clientId);
        } catch (\Throwable $e) {
            $fail('could not list the order\'s services: ' . $e->getMessage());
            return $summary;
        }

        // One request per backend: it credits an order at most once, so every line must travel together.
        $groups = computestacks_hook_group_by_backend((array) $services, $deps, $fail, function ($serviceId, $product) {
            return array('serviceid' => $serviceId, 'apply_credit' => (bool) $product['apply_credit']);
        });

        foreach ($groups as $group) {
            $payload = array(
                'orderId' => $orderId,
                'invoiceId' => $invoiceId,
                'userId' => $clientId,
                'lines' => $group['items'],
            );
            try {
                $response = call_user_func($deps['send'], $group['server'], $payload, $until);
            } catch (\Throwable $e) {
                $fail($e->getMessage());
                continue;
            }
            $credited = isset($response['credited']) && is_scalar($response['credited']) ? (string) $response['credited'] : '0.00';
            $currency = isset($response['currency']) && is_scalar($response['currency']) ? (string) $response['currency'] : '';
            $summary['posted'][] = array('payload' => $payload, 'credited' => $credited, 'currency' => $currency);
            if ($credited !== '' && (float) $credited > 0) {
                // The backend answers a repeated hook the same way, so this states the total, not news.
                computestacks_hook_log_activity(
                    $deps,
                    'ComputeStacks: order #' . $orderId . ' deposit credit is ' . trim($credited . ' ' . $currency) . '.',
                    $clientId
                );
            }
        }
        return $summary;
    }
}

if (!function_exists('computestacks_handle_invoice_paid')) {
    /**
     * The real WHMCS lookups of the InvoicePaid hook; the test driver replaces any of them.
     *
     * @return array<string, callable>
     */
    function computestacks_invoice_paid_default_deps()
    {
        return computestacks_hook_default_deps('InvoicePaid', '/v1/hooks/invoice-paid', array(
            'invoice_client' => 'computestacks_invoice_paid_client',
            'client_services' => 'computestacks_client_services',
        ));
    }

    /**
     * The client an invoice belongs to, from localAPI GetInvoice.
     *
     * @param int $invoiceId
     * @return int
     * @throws \RuntimeException when WHMCS answers with an error
     */
    function computestacks_invoice_paid_client($invoiceId)
    {
        $result = computestacks_hook_local_api('GetInvoice', array('invoiceid' => (int) $invoiceId));
        return (int) (isset($result['userid']) ? $result['userid'] : 0);
    }

    /**
     * Forwards a paid invoice to the backend of each suspended ComputeStacks service of its client.
     *
     * @param array $vars the InvoicePaid hook variables: invoiceid (and invoice, unused)
     * @param array $deps replacements for computestacks_invoice_paid_default_deps()
     * @return array what happened, for tests and logs:
     *               ['clientid' => int, 'posted' => [...], 'errors' => [...], 'skipped' => string]
     */
    function computestacks_handle_invoice_paid(array $vars, array $deps = array())
    {
        // The hook runs inside the payment's request: all its backend calls share one time limit.
        $until = computestacks_hook_until();
        $deps = array_merge(computestacks_invoice_paid_default_deps(), $deps);
        $invoiceId = isset($vars['invoiceid']) && is_scalar($vars['invoiceid']) ? (int) $vars['invoiceid'] : 0;
        $clientId = 0;
        $summary = array('clientid' => 0, 'posted' => array(), 'errors' => array(), 'skipped' => '');
        $fail = function ($message) use (&$summary, &$clientId, $deps, $invoiceId) {
            $summary['errors'][] = $message;
            $text = 'ComputeStacks: invoice #' . $invoiceId . ' was paid, but lifting an overdue-usage suspension '
                . 'failed: ' . $message;
            computestacks_hook_log_failure($deps, $text, $clientId, 'InvoicePaid', array('invoiceid' => $invoiceId), $message);
        };

        if ($invoiceId <= 0) {
            $fail('the hook gave no invoice id.');
            return $summary;
        }
        try {
            $clientId = (int) call_user_func($deps['invoice_client'], $invoiceId);
        } catch (\Throwable $e) {
            $fail('could not read the invoice: ' . $e->getMessage());
            return $summary;
        }
        $summary['clientid'] = $clientId;
        if ($clientId <= 0) {
            $fail('WHMCS gave no client for the invoice.');
            return $summary;
        }
        try {
            $services = call_user_func($deps['client_services'], $clientId);
        } catch (\Throwable $e) {
            $fail('could not list the client\'s services: ' . $e->getMessage());
            return $summary;
        }

        // Only suspended services can be lifted; each goes to the backend of its own server.
        $suspended = array_filter((array) $services, function ($service) {
            return is_array($service) && isset($service['status'])
                && strcasecmp((string) $service['status'], 'Suspended') === 0;
        });
        $groups = computestacks_hook_group_by_backend($suspended, $deps, $fail, function ($serviceId) {
            return $serviceId;
        });
        if (!$groups) {
            if (!$summary['errors']) {
                $summary['skipped'] = 'the client has no suspended ComputeStacks service.';
            }
            return $summary;
        }

        foreach ($groups as $group) {
            $serviceIds = $group['items'];
            $payload = array('invoiceid' => $invoiceId);
            try {
                $response = call_user_func($deps['send'], $group['server'], $payload, $until);
            } catch (\Throwable $e) {
                $many = count($serviceIds) > 1;
                $fail(rtrim($e->getMessage(), '.') . '. ' . ($many ? 'Services #' : 'Service #')
                    . implode(', #', $serviceIds) . ($many ? ' stay' : ' stays') . ' suspended: unsuspend '
                    . ($many ? 'them' : 'it') . ' by hand if the client has no other usage invoice overdue.');
                continue;
            }
            $lifted = array();
            if (isset($response['unsuspended']) && is_array($response['unsuspended'])) {
                foreach ($response['unsuspended'] as $id) {
                    if (is_scalar($id) && (int) $id > 0) {
                        $lifted[] = (int) $id;
                    }
                }
            }
            $summary['posted'][] = array('payload' => $payload, 'serviceids' => $serviceIds,
                'unsuspended' => $lifted);
            if ($lifted) {
                computestacks_hook_log_activity(
                    $deps,
                    'ComputeStacks: invoice #' . $invoiceId . ' paid: the overdue-usage suspension of service #'
                        . implode(', #', $lifted) . ' was lifted.',
                    $clientId
                );
            }
        }
        return $summary;
    }
}

add_hook('OrderPaid', 1, computestacks_hook_guarded('OrderPaid', 'computestacks_handle_order_paid'));

add_hook('InvoicePaid', 1, computestacks_hook_guarded('InvoicePaid', 'computestacks_handle_invoice_paid'));
