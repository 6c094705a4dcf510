from flashocc.ops.bev_pool import BevPoolIndices, bev_pool, bev_pool_naive_cumsum, prepare_bev_pool

__all__ = ["BevPoolIndices", "bev_pool", "bev_pool_naive_cumsum", "prepare_bev_pool"]
