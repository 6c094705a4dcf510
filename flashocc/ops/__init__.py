from flashocc.ops.bev_pool import BevPoolIndices, bev_pool, bev_pool_naive_cumsum, prepare_bev_pool
from flashocc.ops.sparse_conv import (SparseConv3d, SparseModule, SparseSequential, SparseTensor, SubMConv3d,
                                      sparse_weight_from_spconv1, sparse_weight_from_spconv2)
from flashocc.ops.voxelize import HardSimpleVFE, Voxelization, hard_voxelize

__all__ = ["BevPoolIndices", "bev_pool", "bev_pool_naive_cumsum", "prepare_bev_pool",
           "SparseConv3d", "SparseModule", "SparseSequential", "SparseTensor", "SubMConv3d",
           "sparse_weight_from_spconv1", "sparse_weight_from_spconv2",
           "HardSimpleVFE", "Voxelization", "hard_voxelize"]
