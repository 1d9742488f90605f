<?php
/**
 * ComputeStacks provisioning module for WHMCS.
 *
 * A thin forwarder: every function signs the WHMCS $params and POSTs them to the ComputeStacks
 * integration backend (API Gateway + Lambda), which holds the ComputeStacks and WHMCS API
 * credentials and does the work. The contract is the project's API.md; the server record is
 * Hostname (API host[:port][/base path]), Secure ("Use SSL") and Access Hash (the signing secret).
 * Username and Password of the server record are not used.
 *
 * PHP 7.4+ syntax, curl, no Composer.
 */

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

require_once __DIR__ . '/lib/Client.php';

use CSWhmcs\Client;

/** Users per /v1/accounts/list answer during a Server Sync (one ComputeStacks page each). */
if (!defined('COMPUTESTACKS_SYNC_PAGE_SIZE')) {
    define('COMPUTESTACKS_SYNC_PAGE_SIZE', 2000);
}
/** A safety stop: 1,000 pages of 2,000 = two million users. */
if (!defined('COMPUTESTACKS_SYNC_MAX_PAGES')) {
    define('COMPUTESTACKS_SYNC_MAX_PAGES', 1000);
}

/**
 * @return array
 */
function computestacks_MetaData()
{
    return array(
        'DisplayName' => 'ComputeStacks',
        'APIVersion' => '1.1',
        'RequiresServer' => true,
        'ServiceSingleSignOnLabel' => 'Launch Control Panel',
        'AdminSingleSignOnLabel' => false,
        'ListAccountsUniqueIdentifierDisplayName' => 'Username',
        'ListAccountsUniqueIdentifierField' => 'username',
        'ListAccountsProductField' => 'configoption1',
    );
}

/**
 * Product Module Settings: configoption1 = ComputeStacks user group id, configoption2 = Apply Credit.
 *
 * @param array $params
 * @return array
 */
function computestacks_ConfigOptions($params = array())
{
    return array(
        'User Group' => array(
            // WHMCS turns a Loader field into a dropdown of the loader's values (simple mode), and
            // keeps a text box to type the group id by hand when the backend cannot be reached.
            'Type' => 'text',
            'Size' => '25',
            'Loader' => 'computestacks_UserGroupLoader',
            'SimpleMode' => true,
            'Description' => 'The ComputeStacks user group (package) new accounts are placed in.',
        ),
        'Apply Credit' => array(
            'Type' => 'yesno',
            'Default' => 'on',
            'SimpleMode' => true,
            'Description' => 'Tick to turn the amount paid for this product on its first order (a deposit) '
                . 'into account credit for the client, which later usage invoices are paid from.',
        ),
    );
}

/**
 * Loader for configoption1: ComputeStacks user group id => name.
 *
 * @param array $params
 * @return array
 * @throws Exception with the backend's message, which WHMCS shows next to the field
 */
function computestacks_UserGroupLoader($params = array())
{
    try {
        $response = computestacks_call('UserGroupLoader', '/v1/user-groups', (array) $params, false);
    } catch (\Throwable $e) {
        throw new \Exception($e->getMessage());
    }
    if (!isset($response['groups']) || !is_array($response['groups'])) {
        throw new \Exception('The ComputeStacks backend returned no user groups.');
    }
    $groups = array();
    foreach ($response['groups'] as $id => $name) {
        $groups[(string) $id] = is_scalar($name) ? (string) $name : (string) $id;
    }
    return $groups;
}

/**
 * Signs and sends $params to a route; returns the decoded success body.
 *
 * @param string $action       WHMCS function name, for the module log
 * @param string $route        API.md section 3 route
 * @param array  $params       module params as WHMCS passed them
 * @param bool   $withPassword only create and change-password carry the service password
 * @return array
 * @throws \CSWhmcs\BackendError
 */
function computestacks_call($action, $route, array $params, $withPassword)
{
    $client = Client::fromParams($params);
    return $client->call($action, $route, Client::moduleBody($params, $withPassword));
}

/**
 * The "success" / error-string convention of the core module functions.
 *
 * @return string
 */
function computestacks_simple_call($action, $route, array $params, $withPassword = false)
{
    try {
        computestacks_call($action, $route, $params, $withPassword);
        return 'success';
    } catch (\Throwable $e) {
        return computestacks_error_text($e);
    }
}

/**
 * @param \Throwable $e
 * @return string
 */
function computestacks_error_text($e)
{
    $message = trim((string) $e->getMessage());
    return $message !== '' ? $message : 'The ComputeStacks module failed without a message.';
}

/**
 * @param array $params
 * @return string "success" or the reason it failed
 */
function computestacks_CreateAccount(array $params)
{
    try {
        $response = computestacks_call('CreateAccount', '/v1/accounts/create', $params, true);
    } catch (\Throwable $e) {
        return computestacks_error_text($e);
    }
    $username = isset($response['username']) && is_scalar($response['username'])
        ? trim((string) $response['username']) : '';
    if ($username === '') {
        return 'The ComputeStacks backend created the account but did not return its username.';
    }
    if (isset($params['model']) && is_object($params['model'])) {
        try {
            $properties = $params['model']->serviceProperties;
            if (is_object($properties) && is_callable(array($properties, 'save'))) {
                // 'Username' is a core field: WHMCS writes it to tblhosting.username.
                $properties->save(array('Username' => $username));
            }
        } catch (\Throwable $e) {
            return 'The ComputeStacks account ' . $username . ' was created, but WHMCS could not store its '
                . 'username: ' . computestacks_error_text($e) . ' Run Create again to retry.';
        }
    }
    return 'success';
}

/** @return string */
function computestacks_SuspendAccount(array $params)
{
    return computestacks_simple_call('SuspendAccount', '/v1/accounts/suspend', $params);
}

/** @return string */
function computestacks_UnsuspendAccount(array $params)
{
    return computestacks_simple_call('UnsuspendAccount', '/v1/accounts/unsuspend', $params);
}

/** Suspends the ComputeStacks user; the backend never deletes accounts. @return string */
function computestacks_TerminateAccount(array $params)
{
    return computestacks_simple_call('TerminateAccount', '/v1/accounts/terminate', $params);
}

/** @return string */
function computestacks_ChangePassword(array $params)
{
    return computestacks_simple_call('ChangePassword', '/v1/accounts/change-password', $params, true);
}

/** Moves the user to the user group in configoption1. @return string */
function computestacks_ChangePackage(array $params)
{
    return computestacks_simple_call('ChangePackage', '/v1/accounts/change-package', $params);
}

/**
 * @param array $params
 * @return array success/redirectTo or success/errorMsg
 */
function computestacks_ServiceSingleSignOn(array $params)
{
    try {
        $response = computestacks_call('ServiceSingleSignOn', '/v1/accounts/sso', $params, false);
    } catch (\Throwable $e) {
        return array('success' => false, 'errorMsg' => computestacks_error_text($e));
    }
    $url = isset($response['redirect_url']) && is_string($response['redirect_url'])
        ? trim($response['redirect_url']) : '';
    if (!preg_match('#^https?://#i', $url)) {
        return array('success' => false, 'errorMsg' => 'The ComputeStacks backend returned no sign-in address.');
    }
    return array('success' => true, 'redirectTo' => $url);
}

/**
 * @param array $params server params
 * @return array success/error
 */
function computestacks_TestConnection(array $params)
{
    try {
        computestacks_call('TestConnection', '/v1/connection/test', $params, false);
        return array('success' => true, 'error' => '');
    } catch (\Throwable $e) {
        return array('success' => false, 'error' => computestacks_error_text($e));
    }
}

/**
 * Server Sync Tool.
 *
 * @param array $params server params
 * @return array
 */
function computestacks_ListAccounts(array $params)
{
    // Page by page (each answer is one ComputeStacks page), so any number of users fits API Gateway's
    // time and size limits; a backend without paging answers everything at once, with no next_page.
    $remoteAccounts = array();
    $page = 1;
    for ($calls = 0; $page !== null && $calls < COMPUTESTACKS_SYNC_MAX_PAGES; $calls++) {
        try {
            $response = computestacks_call('ListAccounts', '/v1/accounts/list',
                array_merge($params, array('page' => $page, 'page_size' => COMPUTESTACKS_SYNC_PAGE_SIZE)), false);
        } catch (\Throwable $e) {
            return array('success' => false, 'error' => computestacks_error_text($e));
        }
        if (!isset($response['accounts']) || !is_array($response['accounts'])) {
            return array('success' => false, 'error' => 'The ComputeStacks backend returned no account list.');
        }
        foreach ($response['accounts'] as $remote) {
            $remoteAccounts[] = $remote;
        }
        $next = isset($response['next_page']) ? (int) $response['next_page'] : 0;
        $page = $next > $page ? $next : null;
    }
    if ($page !== null) {
        return array('success' => false,
            'error' => 'The ComputeStacks backend kept answering more pages of accounts; the sync was stopped.');
    }
    $statusClass = '\WHMCS\Service\Status';
    $hasStatus = class_exists($statusClass);
    $accounts = array();
    foreach ($remoteAccounts as $remote) {
        if (!is_array($remote)) {
            continue;
        }
        $account = array();
        foreach (array('email', 'username', 'domain', 'uniqueIdentifier', 'product', 'primaryip', 'created', 'status')
            as $key) {
            $account[$key] = isset($remote[$key]) && is_scalar($remote[$key]) ? (string) $remote[$key] : '';
        }
        if ($hasStatus) {
            if (strcasecmp($account['status'], 'Active') === 0) {
                $account['status'] = constant($statusClass . '::ACTIVE');
            } elseif (strcasecmp($account['status'], 'Suspended') === 0) {
                $account['status'] = constant($statusClass . '::SUSPENDED');
            }
        }
        $accounts[] = $account;
    }
    return array('success' => true, 'accounts' => $accounts);
}

/**
 * The overview fields of API.md section 3, typed for templates.
 *
 * @param array $overview
 * @return array
 */
function computestacks_overview_vars(array $overview)
{
    $text = function ($key) use ($overview) {
        return isset($overview[$key]) && is_scalar($overview[$key]) ? (string) $overview[$key] : '';
    };
    $active = isset($overview['active']) ? Client::truthy($overview['active']) : false;
    return array(
        'username' => $text('username'),
        'cs_user_id' => $text('cs_user_id'),
        'active' => $active,
        'projects' => (int) $text('projects'),
        'services' => (int) $text('services'),
        'run_rate' => $text('run_rate'),
        'current_usage' => $text('current_usage'),
        'currency' => $text('currency'),
        'currency_symbol' => $text('currency_symbol'),
        'run_rate_display' => $text('run_rate_display'),
        'current_usage_display' => $text('current_usage_display'),
    );
}

/**
 * Client area product details: clientarea.tpl.
 *
 * @param array $params
 * @return array
 */
function computestacks_ClientArea(array $params)
{
    $serviceId = isset($params['serviceid']) ? (int) $params['serviceid'] : 0;
    $vars = array(
        'serviceid' => $serviceId,
        'sso_url' => 'clientarea.php?action=productdetails&id=' . $serviceId . '&dosinglesignon=1',
        'error' => '',
    );
    try {
        $overview = computestacks_call('ClientArea', '/v1/accounts/overview', $params, false);
    } catch (\Throwable $e) {
        // The detail is in the module log; the client gets a plain sentence.
        $vars['error'] = 'Your cloud account details could not be loaded right now. Please try again later.';
        return array('templatefile' => 'clientarea', 'vars' => $vars);
    }
    return array(
        'templatefile' => 'clientarea',
        'vars' => array_merge(computestacks_overview_vars($overview), $vars),
    );
}

/**
 * Extra rows on the admin's service page; every value is HTML-escaped.
 *
 * @param array $params
 * @return array label => HTML
 */
function computestacks_AdminServicesTabFields(array $params)
{
    try {
        $overview = computestacks_overview_vars(
            computestacks_call('AdminServicesTabFields', '/v1/accounts/overview', $params, false)
        );
    } catch (\Throwable $e) {
        return array('ComputeStacks' => computestacks_h('Account details unavailable: ' . computestacks_error_text($e)));
    }
    $money = function ($display, $amount, $currency) {
        $shown = $display !== '' ? $display : $amount;
        return trim($shown . ($currency !== '' ? ' ' . $currency : ''));
    };
    return array(
        'Username' => computestacks_h($overview['username']),
        'ComputeStacks user id' => computestacks_h($overview['cs_user_id']),
        'Status' => computestacks_h($overview['active'] ? 'Active' : 'Suspended'),
        'Projects' => computestacks_h((string) $overview['projects']),
        'Services' => computestacks_h((string) $overview['services']),
        'Estimated Monthly' => computestacks_h(
            $money($overview['run_rate_display'], $overview['run_rate'], $overview['currency'])
        ),
        'Current Usage' => computestacks_h(
            $money($overview['current_usage_display'], $overview['current_usage'], $overview['currency'])
        ),
    );
}

/**
 * @param string $value
 * @return string
 */
function computestacks_h($value)
{
    return htmlspecialchars((string) $value, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}
