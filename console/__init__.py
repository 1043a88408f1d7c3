"""The operator's side: admin sign-in sessions and what the console and the admin API look up."""
