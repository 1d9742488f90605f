{*
  ComputeStacks client area panel (product details page).
  Variables come from computestacks_ClientArea(): username, cs_user_id, active, projects, services,
  run_rate, current_usage, currency, currency_symbol, run_rate_display, current_usage_display,
  serviceid, sso_url, error; and (computestacks_overview_vars()) usage_reported, usage_rows,
  usage_as_of, usage_as_of_display, billed_reported, billed_lines, billed_periods and
  chart_caption (the bar chart, laid out in PHP: x, y, width, height, centre, amount_y in viewBox
  units), chart_*, billed_other_currency, billed_currency. Every value is escaped here; none of them
  is a secret. The chart is inline SVG: no script, nothing fetched.
  Markup carries both Bootstrap 3 (panel, label) and Bootstrap 4/5 (card, badge) classes so it fits
  the "six" and "twenty-one" client area themes.
*}
{literal}<style>
    .computestacks-clientarea .computestacks-stats th,
    .computestacks-clientarea .computestacks-stats td { padding-left: 15px; padding-right: 15px; }
    .computestacks-clientarea .computestacks-usage th,
    .computestacks-clientarea .computestacks-usage td,
    .computestacks-clientarea .computestacks-billed-lines th,
    .computestacks-clientarea .computestacks-billed-lines td { padding-left: 15px; padding-right: 15px; }
    /* on a narrow screen the chart scrolls sideways, starting at its right end: the newest months */
    .computestacks-clientarea .computestacks-chart-wrap { overflow-x: auto; direction: rtl; }
    .computestacks-clientarea .computestacks-chart { direction: ltr; display: block; width: 100%; min-width: 540px; height: auto; max-width: 760px; margin: 0 auto; }
    .computestacks-clientarea .computestacks-chart .computestacks-bar { fill: #3b78b9; }
    .computestacks-clientarea .computestacks-chart .computestacks-axis { stroke: #b8bfc6; stroke-width: 1; }
    .computestacks-clientarea .computestacks-chart text { fill: currentColor; font-family: inherit; }
    .computestacks-clientarea .computestacks-chart .computestacks-bar-amount { font-size: 12px; }
    .computestacks-clientarea .computestacks-chart .computestacks-bar-month { font-size: 13px; }
    .computestacks-clientarea .computestacks-chart .computestacks-bar-year { font-size: 12px; opacity: .65; }
    .computestacks-clientarea details > summary { display: list-item; cursor: pointer; }
    .computestacks-clientarea .label.badge.label-success { background-color: #5cb85c; }
    .computestacks-clientarea .label.badge.label-warning { background-color: #f0ad4e; }
</style>{/literal}
<div class="computestacks-clientarea">
{if $error}
    <div class="alert alert-warning" role="alert">
        <strong>Cloud account</strong><br>
        {$error|escape:'html':'UTF-8'}
    </div>
{else}
    <div class="panel panel-default card mb-3">
        <div class="panel-heading card-header">
            <h3 class="panel-title card-title h5 mb-0">Cloud Account</h3>
        </div>
        <div class="panel-body card-body">
            <div class="row">
                <div class="col-sm-7 col-md-8">
                    <div class="text-muted small">Username</div>
                    <div class="computestacks-username" style="font-size:1.15em; word-break:break-all;">
                        <strong>{$username|escape:'html':'UTF-8'}</strong>
                        {if $active}
                            <span class="label label-success badge badge-success bg-success">Active</span>
                        {else}
                            <span class="label label-warning badge badge-warning bg-warning text-dark">Suspended</span>
                        {/if}
                    </div>
                </div>
                <div class="col-sm-5 col-md-4 text-right text-end" style="margin-top:6px;">
                    {if $active}
                        <a href="{$sso_url|escape:'html':'UTF-8'}" class="btn btn-primary btn-lg computestacks-sso" target="_blank" rel="noopener noreferrer">
                            Launch Control Panel
                        </a>
                    {else}
                        <span class="btn btn-default btn-secondary btn-lg disabled" aria-disabled="true">Launch Control Panel</span>
                    {/if}
                </div>
            </div>
        </div>
        <table class="table table-striped mb-0 computestacks-stats" style="margin-bottom:0;">
            <tbody>
                <tr>
                    <th scope="row" style="width:50%;">Projects</th>
                    <td class="computestacks-projects">{$projects|escape:'html':'UTF-8'}</td>
                </tr>
                <tr>
                    <th scope="row">Services</th>
                    <td class="computestacks-services">{$services|escape:'html':'UTF-8'}</td>
                </tr>
                <tr>
                    <th scope="row">Estimated Monthly</th>
                    <td class="computestacks-run-rate">{$run_rate_display|escape:'html':'UTF-8'}</td>
                </tr>
                <tr>
                    <th scope="row">Current Usage</th>
                    <td class="computestacks-current-usage">{$current_usage_display|escape:'html':'UTF-8'}</td>
                </tr>
                <tr>
                    <th scope="row">Currency</th>
                    <td class="computestacks-currency">{$currency|escape:'html':'UTF-8'}</td>
                </tr>
            </tbody>
        </table>
        <div class="panel-footer card-footer text-muted small">
            Estimated Monthly is what your current services cost over a full month at their present size;
            Current Usage is the usage not yet invoiced.
        </div>
    </div>
    {if $usage_reported}
    <div class="panel panel-default card mb-3 computestacks-usage-panel">
        <div class="panel-heading card-header">
            <h3 class="panel-title card-title h5 mb-0">Usage This Period</h3>
        </div>
        {if $usage_rows}
        <table class="table table-striped mb-0 computestacks-usage" style="margin-bottom:0;">
            <thead>
                <tr>
                    <th scope="col">Product</th>
                    <th scope="col" class="text-right text-end">Quantity</th>
                    <th scope="col" class="text-right text-end">Amount</th>
                </tr>
            </thead>
            <tbody>
                {foreach from=$usage_rows item=row}
                <tr class="computestacks-usage-row">
                    <td class="computestacks-usage-product">{$row.product|escape:'html':'UTF-8'}</td>
                    <td class="computestacks-usage-quantity text-right text-end">{$row.quantity|escape:'html':'UTF-8'}</td>
                    <td class="computestacks-usage-amount text-right text-end">{$row.amount_display|escape:'html':'UTF-8'}</td>
                </tr>
                {/foreach}
            </tbody>
        </table>
        {else}
        <div class="panel-body card-body computestacks-usage-none">No usage so far this period.</div>
        {/if}
        {if $usage_as_of_display}
        <div class="panel-footer card-footer text-muted small computestacks-usage-as-of">
            As of {$usage_as_of_display|escape:'html':'UTF-8'}; not yet invoiced.
        </div>
        {/if}
    </div>
    {/if}
    {if $billed_reported}
    <div class="panel panel-default card mb-3 computestacks-billed-panel">
        <div class="panel-heading card-header">
            <h3 class="panel-title card-title h5 mb-0">Billing History</h3>
        </div>
        <div class="panel-body card-body">
        {if $billed_periods}
            <p class="text-muted small computestacks-chart-caption" style="margin:0 0 8px;">{$chart_caption|escape:'html':'UTF-8'}</p>
            <div class="computestacks-chart-wrap">
            <svg class="computestacks-chart" viewBox="0 0 {$chart_width|escape:'html':'UTF-8'} {$chart_height|escape:'html':'UTF-8'}" role="img" aria-labelledby="computestacks-chart-title-{$serviceid|escape:'html':'UTF-8'}" xmlns="http://www.w3.org/2000/svg">
                <title id="computestacks-chart-title-{$serviceid|escape:'html':'UTF-8'}">{$chart_caption|escape:'html':'UTF-8'}</title>
                <line class="computestacks-axis" x1="0" y1="{$chart_baseline|escape:'html':'UTF-8'}" x2="{$chart_width|escape:'html':'UTF-8'}" y2="{$chart_baseline|escape:'html':'UTF-8'}"></line>
                {foreach from=$billed_periods item=bar}
                <g class="computestacks-period">
                    <title>{$bar.title|escape:'html':'UTF-8'}: {$bar.amount_display|escape:'html':'UTF-8'}</title>
                    <rect class="computestacks-bar" x="{$bar.x|escape:'html':'UTF-8'}" y="{$bar.y|escape:'html':'UTF-8'}" width="{$bar.width|escape:'html':'UTF-8'}" height="{$bar.height|escape:'html':'UTF-8'}" rx="2"></rect>
                    <text class="computestacks-bar-amount" x="{$bar.centre|escape:'html':'UTF-8'}" y="{$bar.amount_y|escape:'html':'UTF-8'}" text-anchor="middle">{$bar.amount_display|escape:'html':'UTF-8'}</text>
                    <text class="computestacks-bar-month" x="{$bar.centre|escape:'html':'UTF-8'}" y="{$chart_month_y|escape:'html':'UTF-8'}" text-anchor="middle">{$bar.label|escape:'html':'UTF-8'}</text>
                    {if $bar.year_label}<text class="computestacks-bar-year" x="{$bar.centre|escape:'html':'UTF-8'}" y="{$chart_year_y|escape:'html':'UTF-8'}" text-anchor="middle">{$bar.year_label|escape:'html':'UTF-8'}</text>{/if}
                </g>
                {/foreach}
            </svg>
            </div>
            {if $billed_other_currency}
            <p class="text-muted small computestacks-other-currency" style="margin:8px 0 0;">
                Amounts billed in a currency other than {$billed_currency|escape:'html':'UTF-8'} are listed below but not in the chart.
            </p>
            {/if}
        {elseif $billed_lines}
            <p class="computestacks-billed-none" style="margin:0;">Your billed usage is listed below{if $billed_other_currency} (billed in another currency than {$billed_currency|escape:'html':'UTF-8'}){/if}.</p>
        {else}
            <p class="computestacks-billed-none" style="margin:0;">Nothing has been billed for usage yet.</p>
        {/if}
        </div>
        {if $billed_lines}
        <details class="computestacks-billed-details">
            <summary class="panel-footer card-footer small">Show the billed lines</summary>
            <table class="table table-striped table-condensed table-sm mb-0 computestacks-billed-lines" style="margin-bottom:0;">
                <thead>
                    <tr>
                        <th scope="col">Month</th>
                        <th scope="col">Product</th>
                        <th scope="col" class="text-right text-end">Amount</th>
                    </tr>
                </thead>
                <tbody>
                    {foreach from=$billed_lines item=line}
                    <tr class="computestacks-billed-line">
                        <td class="computestacks-billed-period">{$line.period_label|escape:'html':'UTF-8'}</td>
                        <td class="computestacks-billed-product">{$line.product|escape:'html':'UTF-8'}</td>
                        <td class="computestacks-billed-amount text-right text-end">{$line.amount_display|escape:'html':'UTF-8'}</td>
                    </tr>
                    {/foreach}
                </tbody>
            </table>
        </details>
        {/if}
    </div>
    {/if}
{/if}
</div>
