"""What users look at across studies: the steering report (reports.steering: tables,
dose-response plot, specificity, summary.json of a run), the HTML toolkit (reports.html), the
feature dashboard (reports.dashboard, reports.dashboard_html) and the statistics every table
prints (reports.stats: Wilson, bootstrap, McNemar, Wilcoxon), paired effects of episode rows
(reports.paired) and failure-prediction metrics of a monitor's scores over episodes
(reports.failure_metrics: AUROC, time-matched AUROC, lead time, the shuffled-alarm control).

Imports storage, envs, sae, agents, monitors and rollouts; never studies or cli.
"""
