-- Run once by the postgres image, when the pgdata volume is first initialised.
-- POSTGRES_DB (sweep) holds the Optuna studies; this second database is the MLflow backend store.
CREATE DATABASE mlflow;
