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

/** Billed periods the client area's chart and the admin tab show, newest last. */
if (!defined('COMPUTESTACKS_BILLED_PERIODS')) {
    define('COMPUTESTACKS_BILLED_PERIODS', 12);
}

/**
 * The overview fields of API.md section 3, typed for templates.
 *
 * Beyond the four figures: this period's usage per product (usage_rows, "as of" a readable time),
 * the billed lines (billed_lines, newest first), their sum per period with the bar chart's geometry
 * (billed_periods, oldest first, chart_*), the newest billed period (last_billed) and the lines
 * needing an operator (attention, admin only). usage_reported / billed_reported are false when the
 * backend predates those fields: the views then leave their sections out.
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
    $currency = $text('currency');
    $symbol = $text('currency_symbol');
    $vars = array(
        'username' => $text('username'),
        'cs_user_id' => $text('cs_user_id'),
        'active' => $active,
        'projects' => (int) $text('projects'),
        'services' => (int) $text('services'),
        'run_rate' => $text('run_rate'),
        'current_usage' => $text('current_usage'),
        'currency' => $currency,
        'currency_symbol' => $symbol,
        'run_rate_display' => $text('run_rate_display'),
        'current_usage_display' => $text('current_usage_display'),
    );

    // This period's usage per product.
    $vars['usage_reported'] = isset($overview['usage_by_product']) && is_array($overview['usage_by_product']);
    $vars['usage_rows'] = array();
    foreach ($vars['usage_reported'] ? $overview['usage_by_product'] : array() as $row) {
        if (!is_array($row)) {
            continue;
        }
        $amount = computestacks_field($row, 'amount');
        $display = computestacks_field($row, 'amount_display');
        $vars['usage_rows'][] = array(
            'product' => computestacks_field($row, 'product'),
            'quantity' => computestacks_quantity(computestacks_field($row, 'quantity')),
            'amount' => $amount,
            'amount_display' => $display !== '' ? $display : computestacks_money($amount, '', $currency, $symbol),
        );
    }
    $vars['usage_as_of'] = $text('usage_as_of');
    $vars['usage_as_of_display'] = computestacks_when($vars['usage_as_of']);

    // Billed lines, grouped per period for the chart and the admin tab.
    $vars['billed_reported'] = isset($overview['billed']) && is_array($overview['billed']);
    $lines = array();
    foreach ($vars['billed_reported'] ? $overview['billed'] : array() as $line) {
        if (!is_array($line)) {
            continue;
        }
        $lines[] = array(
            'period' => computestacks_field($line, 'period'),
            'product' => computestacks_field($line, 'product'),
            'amount' => computestacks_field($line, 'amount'),
            'currency' => strtoupper(computestacks_field($line, 'currency')),
            'billableid' => (int) computestacks_field($line, 'billableid'),
        );
    }
    // Newest period first, whatever order they came in (YYYY-MM sorts as text); stable within a period.
    $order = array_keys($lines);
    usort($order, function ($a, $b) use ($lines) {
        $byPeriod = strcmp($lines[$b]['period'], $lines[$a]['period']);
        return $byPeriod !== 0 ? $byPeriod : $a - $b;
    });
    // The chart adds up one currency: the account's (else the newest line's). A line in another one
    // (the client's currency was changed) is listed, and left out of the sums.
    $chartCurrency = strtoupper($currency);
    if ($chartCurrency === '' && $order) {
        $chartCurrency = $lines[$order[0]]['currency'];
    }
    $vars['billed_lines'] = array();
    $periods = array();
    $vars['billed_other_currency'] = false;
    foreach ($order as $index) {
        $line = $lines[$index];
        $lineCurrency = $line['currency'] !== '' ? $line['currency'] : $chartCurrency;
        $vars['billed_lines'][] = array(
            'period' => $line['period'],
            'period_label' => computestacks_period_label($line['period'], 'F Y'),
            'product' => $line['product'],
            'amount' => $line['amount'],
            'amount_display' => computestacks_money($line['amount'], $lineCurrency, $currency, $symbol),
            'currency' => $lineCurrency,
            'billableid' => $line['billableid'],
        );
        $cents = computestacks_cents($line['amount']);
        if ($lineCurrency !== $chartCurrency || $cents === null) {
            $vars['billed_other_currency'] = $vars['billed_other_currency'] || $lineCurrency !== $chartCurrency;
            continue;
        }
        $key = $line['period'];
        if (!isset($periods[$key])) {
            if (count($periods) >= COMPUTESTACKS_BILLED_PERIODS) {
                continue;
            }
            $periods[$key] = array('cents' => 0, 'lines' => 0, 'billableids' => array());
        }
        $periods[$key]['cents'] += $cents;
        $periods[$key]['lines']++;
        if ($line['billableid'] > 0) {
            $periods[$key]['billableids'][] = $line['billableid'];
        }
    }
    // The backend's own sums per period (billed_periods: up to 12 periods, where `billed` holds only the
    // newest 12 lines): the chart's bars when given; the lines above still give the billable ids they hold.
    if (isset($overview['billed_periods']) && is_array($overview['billed_periods'])) {
        $fromBackend = array();
        foreach ($overview['billed_periods'] as $row) {
            if (!is_array($row) || !isset($row['period'], $row['amount'])) {
                continue;
            }
            $rowCurrency = isset($row['currency']) && $row['currency'] !== ''
                ? strtoupper((string)$row['currency']) : $chartCurrency;
            $cents = computestacks_cents($row['amount']);
            if ($rowCurrency !== $chartCurrency || $cents === null
                || count($fromBackend) >= COMPUTESTACKS_BILLED_PERIODS) {
                continue;
            }
            $key = (string)$row['period'];
            $fromBackend[$key] = array(
                'cents' => $cents,
                'lines' => isset($periods[$key]) ? $periods[$key]['lines'] : 0,
                'billableids' => isset($periods[$key]) ? $periods[$key]['billableids'] : array(),
            );
        }
        if ($fromBackend) {
            $periods = $fromBackend;
        }
    }
    $vars['billed_currency'] = $chartCurrency;
    $vars = array_merge($vars, computestacks_chart(array_reverse($periods, true), $chartCurrency, $currency, $symbol));

    // The newest billed period and its billable items (every line of it, in any currency).
    $vars['last_billed'] = array('period' => '', 'period_label' => '', 'billableids' => array());
    if ($order) {
        $newest = $lines[$order[0]]['period'];
        $ids = array();
        foreach ($vars['billed_lines'] as $line) {
            if ($line['period'] === $newest && $line['billableid'] > 0) {
                $ids[] = $line['billableid'];
            }
        }
        $vars['last_billed'] = array(
            'period' => $newest,
            'period_label' => computestacks_period_label($newest, 'F Y'),
            'billableids' => $ids,
        );
    }

    // Lines needing an operator (API.md section 3 addition for the admin tab; absent = none).
    $vars['attention'] = array();
    if (isset($overview['attention']) && is_array($overview['attention'])) {
        foreach ($overview['attention'] as $item) {
            if (!is_array($item)) {
                continue;
            }
            $amount = computestacks_field($item, 'amount');
            $vars['attention'][] = array(
                'ref' => computestacks_field($item, 'ref'),
                'period' => computestacks_field($item, 'period'),
                'period_label' => computestacks_period_label(computestacks_field($item, 'period'), 'F Y'),
                'product' => computestacks_field($item, 'product'),
                'amount_display' => computestacks_money($amount, '', $currency, $symbol),
                'what_to_do' => computestacks_field($item, 'what_to_do'),
            );
        }
    }
    return $vars;
}

/**
 * The bar chart of billed periods, laid out here so the template only prints numbers. Coordinates are
 * in the SVG's viewBox units: COMPUTESTACKS_BILLED_PERIODS slots across, bars centred as a group.
 *
 * @param array  $periods period => ['cents', 'lines', 'billableids'], oldest first
 * @param string $chartCurrency
 * @param string $currency the account's
 * @param string $symbol
 * @return array chart_* vars and billed_periods
 */
function computestacks_chart(array $periods, $chartCurrency, $currency, $symbol)
{
    $width = 720;
    $slot = $width / COMPUTESTACKS_BILLED_PERIODS;
    $barWidth = 36;
    $top = 24;        // room for the amount above the tallest bar
    $baseline = 184;
    $plot = $baseline - $top;
    $max = 0;
    foreach ($periods as $period) {
        $max = max($max, $period['cents']);
    }
    $left = (COMPUTESTACKS_BILLED_PERIODS - count($periods)) * $slot / 2;
    $bars = array();
    $i = 0;
    $previousYear = '';
    foreach ($periods as $key => $period) {
        $key = (string) $key;
        $height = ($max > 0 && $period['cents'] > 0) ? max(2.0, round($plot * $period['cents'] / $max, 1)) : 0.0;
        $centre = $left + $i * $slot + $slot / 2;
        $year = preg_match('/^(\d{4})-\d{2}$/', $key, $m) ? $m[1] : '';
        $amount = computestacks_cents_text($period['cents']);
        $bars[] = array(
            'period' => $key,
            'label' => computestacks_period_label($key, 'M'),
            'year_label' => ($year !== '' && $year !== $previousYear) ? $year : '',
            'title' => computestacks_period_label($key, 'F Y'),
            'amount' => $amount,
            'amount_display' => computestacks_money($amount, $chartCurrency, $currency, $symbol),
            'lines' => $period['lines'],
            'billableids' => $period['billableids'],
            'x' => computestacks_svg_number($centre - $barWidth / 2),
            'y' => computestacks_svg_number($baseline - $height),
            'width' => computestacks_svg_number($barWidth),
            'height' => computestacks_svg_number($height),
            'centre' => computestacks_svg_number($centre),
            'amount_y' => computestacks_svg_number($baseline - $height - 6),
        );
        $previousYear = $year !== '' ? $year : $previousYear;
        $i++;
    }
    return array(
        'billed_periods' => $bars,
        'chart_caption' => count($bars) === 1 ? 'Amount billed for the last month billed.'
            : 'Amount billed per month, the last ' . count($bars) . ' months billed.',
        'chart_width' => computestacks_svg_number($width),
        'chart_height' => computestacks_svg_number($baseline + 36),
        'chart_baseline' => computestacks_svg_number($baseline),
        'chart_month_y' => computestacks_svg_number($baseline + 16),
        'chart_year_y' => computestacks_svg_number($baseline + 31),
    );
}

/**
 * A coordinate for SVG: "342", "17.5" (never a locale's decimal comma, as PHP 7's float to string gives).
 *
 * @param float|int $value
 * @return string
 */
function computestacks_svg_number($value)
{
    $text = number_format((float) $value, 1, '.', '');
    return substr($text, -2) === '.0' ? substr($text, 0, -2) : $text;
}

/**
 * A scalar field of a row as a string ('' when absent or not scalar).
 *
 * @param array  $row
 * @param string $key
 * @return string
 */
function computestacks_field(array $row, $key)
{
    if (!isset($row[$key]) || !is_scalar($row[$key]) || is_bool($row[$key])) {
        return '';
    }
    return trim((string) $row[$key]);
}

/**
 * A decimal string as whole cents, rounded half away from zero; null when it is not a decimal.
 *
 * @param string $amount
 * @return int|null
 */
function computestacks_cents($amount)
{
    if (!preg_match('/^([+-]?)(\d{1,15})(?:\.(\d*))?$/', trim((string) $amount), $m)) {
        return null;
    }
    $fraction = isset($m[3]) ? $m[3] : '';
    $cents = (int) $m[2] * 100 + (int) substr(str_pad($fraction, 2, '0'), 0, 2);
    if (strlen($fraction) > 2 && (int) $fraction[2] >= 5) {
        $cents++;
    }
    return $m[1] === '-' ? -$cents : $cents;
}

/**
 * @param int $cents
 * @return string e.g. "-12.05"
 */
function computestacks_cents_text($cents)
{
    $sign = $cents < 0 ? '-' : '';
    $cents = abs((int) $cents);
    return $sign . intdiv($cents, 100) . '.' . str_pad((string) ($cents % 100), 2, '0', STR_PAD_LEFT);
}

/**
 * An amount for people: "€12.30" in the account's currency (as the backend's *_display), else
 * "12.30 USD"; the amount as given when it is not a decimal.
 *
 * @param string $amount
 * @param string $lineCurrency '' = the account's
 * @param string $currency the account's ISO code
 * @param string $symbol the account's currency symbol
 * @return string
 */
function computestacks_money($amount, $lineCurrency, $currency, $symbol)
{
    $cents = computestacks_cents($amount);
    if ($cents === null) {
        return trim((string) $amount);
    }
    $text = computestacks_cents_text(abs($cents));
    $sign = $cents < 0 ? '-' : '';
    $own = $lineCurrency === '' || strcasecmp($lineCurrency, $currency) === 0;
    if ($own && $symbol !== '') {
        return $sign . $symbol . $text;
    }
    $code = $lineCurrency !== '' ? $lineCurrency : $currency;
    return trim($sign . $text . ' ' . $code);
}

/**
 * "730.500000" -> "730.5": a usage quantity without trailing zeros.
 *
 * @param string $quantity
 * @return string
 */
function computestacks_quantity($quantity)
{
    if (preg_match('/^-?\d+\.\d+$/', $quantity)) {
        return rtrim(rtrim($quantity, '0'), '.');
    }
    return $quantity;
}

/**
 * "2026-11" as "November 2026" ('F Y') or "Nov" ('M'); anything else as given.
 *
 * @param string $period
 * @param string $format a date() format
 * @return string
 */
function computestacks_period_label($period, $format)
{
    if (!preg_match('/^(\d{4})-(0[1-9]|1[0-2])$/', (string) $period, $m)) {
        return (string) $period;
    }
    return date($format, gmmktime(12, 0, 0, (int) $m[2], 1, (int) $m[1]));
}

/**
 * An ISO-8601 time as people read it, in WHMCS's time zone: "2 Dec 2026, 09:00 UTC".
 *
 * @param string $iso
 * @return string '' when empty; the text as given when it is not a time
 */
function computestacks_when($iso)
{
    $iso = trim((string) $iso);
    if ($iso === '' || !preg_match('/^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/', $iso)) {
        return $iso;
    }
    try {
        $when = new \DateTime($iso, new \DateTimeZone('UTC'));
        $when->setTimezone(new \DateTimeZone(date_default_timezone_get()));
    } catch (\Throwable $e) {
        return $iso;
    }
    return $when->format('j M Y, H:i T');
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
    $overviewVars = computestacks_overview_vars($overview);
    // The operator's notes are for the admin tab, not for the client's page.
    unset($overviewVars['attention']);
    return array(
        'templatefile' => 'clientarea',
        'vars' => array_merge($overviewVars, $vars),
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
    $fields = array(
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
    $clientId = isset($params['userid']) ? (int) $params['userid'] : 0;
    if ($overview['usage_reported']) {
        $fields['Usage This Period'] = computestacks_admin_usage($overview);
    }
    if ($overview['billed_reported']) {
        $fields['Billed Periods'] = computestacks_admin_billed($overview, $clientId);
        $fields['Last Billed'] = computestacks_admin_last_billed($overview['last_billed'], $clientId);
        $fields['Needs Attention'] = computestacks_admin_attention($overview['attention']);
    }
    return $fields;
}

/**
 * The opening tag of the admin tab's small tables (WHMCS's admin area is Bootstrap 3).
 *
 * @return string
 */
function computestacks_admin_table()
{
    return '<table class="table table-condensed table-bordered table-sm" style="width:auto; margin:0 0 4px 0;">';
}

/**
 * @param array $overview computestacks_overview_vars()
 * @return string HTML
 */
function computestacks_admin_usage(array $overview)
{
    $asOf = $overview['usage_as_of_display'] !== ''
        ? '<div class="text-muted small">As of ' . computestacks_h($overview['usage_as_of_display'])
            . ($overview['usage_as_of'] !== '' ? ' (' . computestacks_h($overview['usage_as_of']) . ')' : '')
            . '</div>'
        : '';
    if (!$overview['usage_rows']) {
        return 'No usage so far this period.' . $asOf;
    }
    $html = computestacks_admin_table() . '<thead><tr><th>Product</th><th class="text-right">Quantity</th>'
        . '<th class="text-right">Amount</th></tr></thead><tbody>';
    foreach ($overview['usage_rows'] as $row) {
        $html .= '<tr><td>' . computestacks_h($row['product']) . '</td>'
            . '<td class="text-right">' . computestacks_h($row['quantity']) . '</td>'
            . '<td class="text-right">' . computestacks_h($row['amount_display']) . '</td></tr>';
    }
    return $html . '</tbody></table>' . $asOf;
}

/**
 * @param array $overview computestacks_overview_vars()
 * @param int   $clientId
 * @return string HTML
 */
function computestacks_admin_billed(array $overview, $clientId)
{
    $html = '';
    if ($overview['billed_periods']) {
        $html .= computestacks_admin_table() . '<thead><tr><th>Period</th><th class="text-right">Amount</th>'
            . '<th>Billable items</th></tr></thead><tbody>';
        foreach (array_reverse($overview['billed_periods']) as $period) {
            $html .= '<tr><td>' . computestacks_h($period['title']) . '</td>'
                . '<td class="text-right">' . computestacks_h($period['amount_display']) . '</td>'
                . '<td>' . computestacks_billable_links($period['billableids'], $clientId) . '</td></tr>';
        }
        $html .= '</tbody></table>';
    }
    if ($overview['billed_other_currency']) {
        // Not added up with the others: listed one by one, each with its own currency.
        $html .= '<div class="text-muted small">Billed in another currency than '
            . computestacks_h($overview['billed_currency']) . ':</div>' . computestacks_admin_table() . '<tbody>';
        foreach ($overview['billed_lines'] as $line) {
            if ($line['currency'] === $overview['billed_currency']) {
                continue;
            }
            $html .= '<tr><td>' . computestacks_h($line['period_label']) . '</td>'
                . '<td>' . computestacks_h($line['product']) . '</td>'
                . '<td class="text-right">' . computestacks_h($line['amount_display']) . '</td>'
                . '<td>' . computestacks_billable_links($line['billableid'] > 0 ? array($line['billableid']) : array(),
                    $clientId) . '</td></tr>';
        }
        $html .= '</tbody></table>';
    }
    return $html !== '' ? $html : 'Nothing billed yet.';
}

/**
 * @param array $last ['period', 'period_label', 'billableids']
 * @param int   $clientId
 * @return string HTML
 */
function computestacks_admin_last_billed(array $last, $clientId)
{
    if ($last['period'] === '') {
        return 'Nothing billed yet.';
    }
    $html = computestacks_h($last['period_label']);
    if ($last['period_label'] !== $last['period']) {
        $html .= ' (' . computestacks_h($last['period']) . ')';
    }
    if ($last['billableids']) {
        $html .= ': billable item' . (count($last['billableids']) > 1 ? 's ' : ' ')
            . computestacks_billable_links($last['billableids'], $clientId);
    }
    return $html;
}

/**
 * @param array $attention computestacks_overview_vars()['attention']
 * @return string HTML
 */
function computestacks_admin_attention(array $attention)
{
    if (!$attention) {
        return 'None.';
    }
    $html = computestacks_admin_table() . '<thead><tr><th>Ref</th><th>Period</th><th>Product</th>'
        . '<th class="text-right">Amount</th><th>What to do</th></tr></thead><tbody>';
    foreach ($attention as $item) {
        $html .= '<tr class="warning"><td><code style="white-space:nowrap;">' . computestacks_h($item['ref']) . '</code></td>'
            . '<td>' . computestacks_h($item['period_label']) . '</td>'
            . '<td>' . computestacks_h($item['product']) . '</td>'
            . '<td class="text-right">' . computestacks_h($item['amount_display']) . '</td>'
            . '<td>' . computestacks_h($item['what_to_do']) . '</td></tr>';
    }
    return $html . '</tbody></table>';
}

/**
 * "#123, #124", each a link to the billable item in WHMCS's admin area when the client is known.
 *
 * @param int[] $ids
 * @param int   $clientId
 * @return string HTML
 */
function computestacks_billable_links(array $ids, $clientId)
{
    $links = array();
    foreach ($ids as $id) {
        $id = (int) $id;
        $text = '#' . $id;
        $links[] = $clientId > 0
            ? '<a href="' . computestacks_h('clientsbillableitems.php?userid=' . (int) $clientId
                . '&action=manage&id=' . $id) . '">' . $text . '</a>'
            : $text;
    }
    return $links ? implode(', ', $links) : '&mdash;';
}

/**
 * @param string $value
 * @return string
 */
function computestacks_h($value)
{
    return htmlspecialchars((string) $value, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}
