"""What a trial searches, builds, trains and scores."""
