"""`physteer demo`: layout (stage markers), run (the stages), vla_stage, and the report in
Markdown (report_md) and HTML (report_html, report_html_sarm, report_html_vla)."""
