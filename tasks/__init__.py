"""Thin Prefect tasks over rsr/: arguments in, one library call, result out. Retries are declared here."""
