{*
  ComputeStacks client area panel (product details page).
  Variables come from computestacks_ClientArea(): username, cs_user_id, active, projects, services,
  run_rate, current_usage, currency, currency_symbol, run_rate_display, current_usage_display,
  serviceid, sso_url, error. Every value is escaped here; none of them is a secret.
  Markup carries both Bootstrap 3 (panel, label) and Bootstrap 4/5 (card, badge) classes so it fits
  the "six" and "twenty-one" client area themes.
*}
{literal}<style>
    .computestacks-clientarea .computestacks-stats th,
    .computestacks-clientarea .computestacks-stats td { padding-left: 15px; padding-right: 15px; }
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
{/if}
</div>
