"""GEmo-CLAP's protocol: IEMOCAP leave-one-session-out, one CLAP loss per row of the table."""
