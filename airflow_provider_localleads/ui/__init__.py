"""The "LocalLeads credits" page: data (``data``), HTML (``render``) and its mounting per Airflow line.

Nothing is imported here: Airflow loads the plugin module in every process, and only the api-server
(or the 2.11 webserver) needs the rest.
"""
