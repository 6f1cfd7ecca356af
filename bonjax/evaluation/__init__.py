"""bonjax.evaluation: a policy measured the way the paper does, over N and temperature.

    results = evaluation.evaluate('runs/arith/bon_rl_v', model=model, task=task,
                                  verifier=verifier, reward=reward, ns=[1, 4, 16],
                                  temperatures=[0.3, 0.7, 1.0], out_dir='runs/arith/bon_rl_v/eval')
    results.mean('pass', 16, 0.7), results.interval('bon', 4, 1.0)
    evaluation.paired_difference(results_a, results_b, 'pass', 16, 0.7)
    evaluation.write_report(results, out_dir)      # eval.json, plots, and the printed table
"""

from bonjax.evaluation.coscaling import fit_coscaling, fit_power_law, power_law
from bonjax.evaluation.core import (evaluate, latest_step, load_samples, restore_run_params,
                                    run_tokenizer)
from bonjax.evaluation.report import plot, table, write_report
from bonjax.evaluation.results import EvalResults, paired_difference
from bonjax.evaluation.stats import METRICS, interval, problem_metrics

__all__ = ['EvalResults', 'METRICS', 'evaluate', 'fit_coscaling', 'fit_power_law', 'interval',
           'load_samples', 'paired_difference', 'plot', 'power_law', 'problem_metrics',
           'latest_step', 'restore_run_params', 'run_tokenizer', 'table', 'write_report']
