<?php
/**
 * ComputeStacks billing receiver: <WHMCS URL>/modules/servers/computestacks/billing.php (shared API.md section 8).
 *
 * The backend POSTs signed batches of billable items here; each item's `ref` creates at most one WHMCS billable
 * item, ever (logic and reasoning in lib/Receiver.php). Bootstraps WHMCS like a payment-gateway callback.
 *
 * The answer is JSON and nothing else: output is buffered from the first line and the buffer is discarded before
 * the answer is written, so a notice or stray output from WHMCS's bootstrap or an addon cannot corrupt it.
 */

ob_start();

// No answer written (a fatal error, or the bootstrap exited): answer 503 so the backend sends the items again.
register_shutdown_function(function () {
    if (defined('COMPUTESTACKS_BILLING_ANSWERED')) {
        return;
    }
    define('COMPUTESTACKS_BILLING_ANSWERED', true);
    while (ob_get_level() > 0) {
        if (!@ob_end_clean()) {
            break;
        }
    }
    if (!headers_sent()) {
        http_response_code(503);
        header('Content-Type: application/json');
        header('Cache-Control: no-store');
    }
    echo '{"result":"error","message":"The billing receiver stopped before answering; send the same items again."}';
    ob_start(function () {
        return '';
    });
});

require_once __DIR__ . '/../../../init.php';

// From here on notices go nowhere near the answer (they are still logged where PHP logs them).
@ini_set('display_errors', '0');

require_once __DIR__ . '/lib/Receiver.php';

\CSWhmcs\BillingReceiver::main();
