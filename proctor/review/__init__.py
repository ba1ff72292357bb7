"""What people add to a session after the machine: reviews, decisions, the audit."""
