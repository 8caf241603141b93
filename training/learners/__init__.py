"""The learners: one folder per emotion model, each giving ``sera.training.protocol`` what differs."""
