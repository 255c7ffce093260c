"""The paper's reported numbers (AAAI 2021, Tables 1-4), printed beside ours in the report."""

# Table 1 (ML-1M): share of users holding a top-30% value.
TABLE1_ML = {"age": 0.724, "gender": 0.717, "zip": 0.567, "occupation": 0.640}
MAJOR_SHARE = {"movielens": 0.65, "bookcrossing": 0.72, "taobao": 0.71}

# Table 2: (mean, sd) over 3 trials.
TABLE2 = {
    ("movielens", "melu"): {"mse": (1.451, 0.022), "ndcg@3": (0.793, 0.002), "ndcg@5": (0.800, 0.001)},
    ("movielens", "meta_sgd"): {"mse": (1.340, 0.054), "ndcg@3": (0.773, 0.007), "ndcg@5": (0.794, 0.007)},
    ("movielens", "transfer"): {"mse": (1.308, 0.016), "ndcg@3": (0.778, 0.001), "ndcg@5": (0.796, 0.002)},
    ("movielens", "at_paml"): {"mse": (1.322, 0.007), "ndcg@3": (0.788, 0.003), "ndcg@5": (0.806, 0.006)},
    ("movielens", "reg_paml"): {"mse": (1.210, 0.029), "ndcg@3": (0.779, 0.002), "ndcg@5": (0.803, 0.001)},
    ("bookcrossing", "melu"): {"mse": (4.019, 0.101), "ndcg@3": (0.864, 0.002), "ndcg@5": (0.914, 0.002)},
    ("bookcrossing", "meta_sgd"): {"mse": (5.197, 0.089), "ndcg@3": (0.867, 0.001), "ndcg@5": (0.921, 0.002)},
    ("bookcrossing", "transfer"): {"mse": (4.522, 0.376), "ndcg@3": (0.862, 0.010), "ndcg@5": (0.919, 0.005)},
    ("bookcrossing", "at_paml"): {"mse": (3.991, 0.114), "ndcg@3": (0.852, 0.001), "ndcg@5": (0.930, 0.002)},
    ("bookcrossing", "reg_paml"): {"mse": (3.928, 0.176), "ndcg@3": (0.868, 0.001), "ndcg@5": (0.917, 0.001)},
}

# Table 3 (ML-1M): MSE of major users, of minor users, p-value.
TABLE3_ML = {
    "melu": (1.413, 1.506, 0.071), "meta_sgd": (1.300, 1.403, 0.024), "transfer": (1.288, 1.340, 0.227),
    "reg_paml": (1.194, 1.236, 0.312), "at_paml": (1.284, 1.382, 0.018),
}

# Table 4 (ML-1M): gamma ablation and PAML, (major, minor, p).
TABLE4_ML = {
    1e-5: (1.464, 1.601, 0.008), 1e-4: (1.210, 1.255, 0.226), 1e-3: (1.196, 1.183, 0.312),
    1e-2: (1.194, 1.236, 0.738), "paml": (1.471, 1.569, 0.038), "at_paml": (1.284, 1.382, 0.018),
}
