"""What users look at across studies: the steering report (reports.steering: tables,
dose-response plot, specificity, summary.json of a run), the HTML toolkit (reports.html), the
feature dashboard (reports.dashboard, reports.dashboard_html) and the statistics every table
prints (reports.stats: Wilson, bootstrap, McNemar, Wilcoxon).

Imports storage, envs, sae, agents, monitors and rollouts; never studies or cli.
"""
