"""The built-in web UI (`llmwatch dashboard`): Overview, Alerts, Loop, Requests and Dead letters, read-only."""
